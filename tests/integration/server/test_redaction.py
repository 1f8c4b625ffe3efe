"""An agent's exception text reaches clients only through the app's redaction hook.

By default a client learns the exception's type and a generic message; the message and
the traceback go to the server log. Checked over real sockets: on the raw frames, through
the client's StreamFailed, and in the store's record that HTTP readers see.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.asyncio.client import connect

from unbroken import StreamFailed
from unbroken.client import Client
from unbroken.protocol.frames import Hello, Start, encode
from unbroken.server import Output, Request, Unbroken
from unbroken.server.hub import reveal_exception
from unbroken.testing import serve

SECRET = "sk-live-0123456789abcdef"
T = 10.0


def leaky_app(**kw: object) -> Unbroken:
    app = Unbroken(allow_anonymous=True, **kw)  # type: ignore[arg-type]

    @app.agent("leak")
    async def leak(_req: Request, out: Output) -> None:
        await out.text("partial ")
        raise ValueError(f"could not call the model with key {SECRET}")

    return app


async def raw_frames(url: str) -> list[str]:
    """Every frame the server sends for one run of ``leak``, as received."""
    frames: list[str] = []
    async with connect(url, subprotocols=["unbroken.v1"]) as ws:  # type: ignore[list-item]
        await ws.send(encode(Hello()).decode())
        await ws.send(encode(Start("r1", "leak")).decode())
        async with asyncio.timeout(T):
            while True:
                frame = await ws.recv()
                assert isinstance(frame, str)
                frames.append(frame)
                if '"k":"end"' in frame:
                    return frames


async def failed_of(url: str) -> StreamFailed:
    async with Client(url) as client:
        st = await client.start("leak")
        async for _ in st:
            pass
        with pytest.raises(StreamFailed) as caught:
            await st.wait()
        assert st.result.text == "partial "
        return caught.value


async def test_by_default_a_client_sees_only_the_exception_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="unbroken.server.hub")
    app = leaky_app()
    async with serve(app) as srv:
        frames = await raw_frames(srv.url)
        failed = await failed_of(srv.url)
        meta = await app.store.meta(failed.stream)
    assert not any(SECRET in f for f in frames), frames
    assert any("internal error in agent: ValueError" in f for f in frames), frames
    assert failed.error == "internal error in agent: ValueError"
    assert SECRET not in str(failed)
    assert meta is not None and meta.error == "internal error in agent: ValueError"
    # the details stay on the server: the message and the traceback in its log
    logged = [r for r in caplog.records if "agent failed" in r.getMessage()]
    assert logged and SECRET in logged[0].getMessage()
    assert logged[0].exc_info is not None


async def test_a_custom_hook_decides_what_the_client_sees() -> None:
    seen: list[BaseException] = []

    def redact(exc: BaseException) -> str:
        seen.append(exc)
        return f"the model is unavailable ({type(exc).__name__}), try again"

    async with serve(leaky_app(redact=redact)) as srv:
        frames = await raw_frames(srv.url)
        failed = await failed_of(srv.url)
    assert failed.error == "the model is unavailable (ValueError), try again"
    assert not any(SECRET in f for f in frames)
    assert len(seen) == 2 and all(isinstance(e, ValueError) for e in seen)


async def test_reveal_exception_passes_the_message_through() -> None:
    async with serve(leaky_app(redact=reveal_exception)) as srv:
        failed = await failed_of(srv.url)
    assert failed.error == f"ValueError: could not call the model with key {SECRET}"


async def test_a_hook_that_raises_falls_back_to_the_default() -> None:
    def broken(exc: BaseException) -> str:
        raise RuntimeError(f"hook broke on {exc}")

    async with serve(leaky_app(redact=broken)) as srv:
        frames = await raw_frames(srv.url)
        failed = await failed_of(srv.url)
    assert failed.error == "internal error in agent: ValueError"
    assert not any(SECRET in f for f in frames)


def careful_app(**kw: object) -> Unbroken:
    """An agent that catches its tool's exception and ends the part itself."""
    app = Unbroken(allow_anonymous=True, **kw)  # type: ignore[arg-type]

    @app.agent("careful")
    async def careful(_req: Request, out: Output) -> None:
        await out.start_part("tool", "text")
        try:
            raise ConnectionError(f"https://api.example/?key={SECRET} refused")
        except ConnectionError as exc:
            await out.end_part("tool", out.redact(exc))
        await out.text("answered without the tool")

    return app


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({}, "internal error in agent: ConnectionError"),
        ({"redact": lambda e: f"tool down ({type(e).__name__})"}, "tool down (ConnectionError)"),
    ],
)
async def test_an_agent_ends_a_part_with_the_apps_redaction(
    kw: dict[str, object], said: str
) -> None:
    async with serve(careful_app(**kw)) as srv, Client(srv.url) as client:
        answer = await asyncio.wait_for((await client.start("careful")).wait(), T)
    assert answer.parts["tool"].error == said
    assert answer.complete and answer.text.endswith("answered without the tool")
