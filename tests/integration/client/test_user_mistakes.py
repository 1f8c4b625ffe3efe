"""The mistakes a new user makes first get an error that says what to do, from our own
hierarchy: an agent written as a generator or a sync function, ``@app.agent`` without
its name, a client used with ``with`` or entered twice or after it closed, a wrong
WebSocket path, a URL where no server listens."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from unbroken import (
    AuthError,
    BackoffPolicy,
    Client,
    ConfigError,
    ReconnectExhausted,
    StreamFailed,
)
from unbroken.protocol.frames import Hello
from unbroken.server import ConnectInfo, Output, Principal, Request, Unbroken
from unbroken.server.agent import Agent
from unbroken.testing import serve

FAST = BackoffPolicy(base=0.01, cap=0.05, max_attempts=3, deadline=10)


def test_an_agent_that_cannot_run_is_refused_when_registered() -> None:
    app = Unbroken(allow_anonymous=True)

    def sync_gen(req: Request, out: Output) -> Iterator[str]:
        yield "a"

    async def async_gen(req: Request, out: Output) -> AsyncIterator[str]:
        yield "a"

    async def no_args() -> None:
        pass

    for fn, words in (
        (sync_gen, "is a generator"),
        (async_gen, "is a generator"),
        (no_args, "two arguments"),
    ):
        with pytest.raises(ConfigError, match=words) as refused:
            app.agent("x")(fn)  # type: ignore[arg-type]
        assert f"async def {fn.__name__}(req, out)" in str(refused.value)
    assert app.agents == {}

    with pytest.raises(ConfigError, match=r'@app.agent\("name"\)'):
        app.agent(async_gen)  # type: ignore[arg-type]  # the decorator without its name
    with pytest.raises(ConfigError, match="bad agent name"):
        app.agent("two words")

    async def fine(req: Request, out: Output) -> None:
        await out.text("ok")

    assert app.agent("fine")(fine) is fine


async def test_a_client_used_the_wrong_way_says_how_to_use_it() -> None:
    client = Client("ws://127.0.0.1:9/ws")
    with pytest.raises(ConfigError, match="async with Client"), client:
        pass
    await client.close()
    with pytest.raises(ConfigError, match="this client is closed"):
        async with client:
            pass


async def test_a_wrong_path_is_a_404_and_an_open_client_cannot_be_entered_again() -> None:
    app = Unbroken(allow_anonymous=True)

    @app.agent("echo")
    async def echo(req: Request, out: Output) -> None:
        await out.text("hi")

    async with serve(app) as srv, asyncio.timeout(15):
        with pytest.raises(ConfigError, match=r"HTTP 404.*it is at /ws; check the path"):
            async with Client(srv.url.replace("/ws", "/wss"), policy=FAST):
                pass
        async with Client(srv.url, policy=FAST) as client:
            with pytest.raises(ConfigError, match="open already"):
                async with client:
                    pass
            assert (await (await client.start("echo")).wait()).text == "hi"
        with pytest.raises(ConfigError, match="this client is closed"):
            await client.start("echo")


async def test_a_client_that_never_connected_says_to_check_the_url() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/ws"
    with pytest.raises(ReconnectExhausted) as gave_up:
        async with asyncio.timeout(15), Client(url, policy=FAST):
            pass
    text = str(gave_up.value)
    assert f"could not connect to {url}" in text and "check the URL" in text
    assert "resumed" not in text  # there is no stream to resume
    assert gave_up.value.never_connected == (url,)
    assert isinstance(gave_up.value.last_error, ConnectionRefusedError)


async def test_an_agent_that_raises_says_where_its_traceback_is() -> None:
    app = Unbroken(allow_anonymous=True)

    @app.agent("boom")
    async def boom(req: Request, out: Output) -> None:
        await out.text("partial")
        raise ValueError("secret detail")

    async with serve(app) as srv, asyncio.timeout(15), Client(srv.url, policy=FAST) as client:
        stream = await client.start("boom")
        with pytest.raises(StreamFailed) as failed:
            await stream.wait()
    text = str(failed.value)
    assert failed.value.error == "internal error in agent: ValueError"  # on the wire: redacted
    assert "secret detail" not in text
    assert (
        f"the server's log has its message and traceback: `agent failed stream={stream.id}`" in text
    )
    assert "redact=reveal_exception" in text


def test_an_authenticate_hook_that_cannot_answer_is_refused_when_the_app_is_built() -> None:
    def gen_hook(hello: Hello, info: ConnectInfo) -> Iterator[Principal]:
        yield Principal("a")

    async def token_only(token: str) -> Principal:
        return Principal("a")

    with pytest.raises(ConfigError, match="is a generator"):
        Unbroken(authenticate=gen_hook)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"takes \(token\).*hello\.token"):
        Unbroken(auth=token_only)  # type: ignore[arg-type]


async def test_a_hook_that_returns_no_principal_refuses_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def forgot_to_raise(hello: Hello, info: ConnectInfo) -> Principal:
        return None  # type: ignore[return-value]  # meant: raise AuthError

    async def crashes(hello: Hello, info: ConnectInfo) -> Principal:
        raise ValueError("identity provider down")

    app = Unbroken(authenticate=forgot_to_raise)
    async with serve(app) as srv, asyncio.timeout(15):
        with pytest.raises(AuthError, match="authenticate hook gave no principal"):
            async with Client(srv.url, token="t", policy=FAST):
                pass  # refused at once (4002), not retried as a server fault
    assert "authenticate hook returned None, not a Principal" in caplog.text

    app = Unbroken(authenticate=crashes)  # a server fault: retried, then given up on
    async with serve(app) as srv, asyncio.timeout(15):
        with pytest.raises(ReconnectExhausted, match="the server closed every attempt") as e:
            async with Client(srv.url, token="t", policy=FAST):
                pass
    assert getattr(e.value.last_error, "code", None) == 1011 or (
        getattr(getattr(e.value.last_error, "rcvd", None), "code", None) == 1011
    )


async def test_a_lambda_or_a_wrapper_returning_a_coroutine_runs_and_a_sync_agent_fails_clearly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Registration cannot tell a ``lambda`` returning a coroutine from a plain
    ``def``: both are registered, and the one that returns no awaitable ends its
    run ``failed`` with the right shape, when it is called."""

    async def real(req: Request, out: Output, model: str = "x") -> None:
        await out.text(model)

    def logged(fn: Callable[[Request, Output], Awaitable[None]]) -> Agent:
        @functools.wraps(fn)
        def wrapper(req: Request, out: Output) -> Awaitable[None]:
            return fn(req, out)

        return wrapper

    def sync_fn(req: Request, out: Output) -> None:
        pass

    async def verify(hello: Hello) -> Principal:
        return Principal(hello.token or "-")

    app = Unbroken(authenticate=lambda hello, info: verify(hello))
    app.agent("lam")(lambda req, out: real(req, out, "gpt"))
    app.agent("wrapped")(logged(real))
    app.agent("sync")(sync_fn)  # type: ignore[arg-type]
    async with (
        serve(app) as srv,
        asyncio.timeout(15),
        Client(srv.url, token="t", policy=FAST) as client,
    ):
        assert (await (await client.start("lam")).wait()).text == "gpt"
        assert (await (await client.start("wrapped")).wait()).text == "x"
        with pytest.raises(StreamFailed) as failed:
            await (await client.start("sync")).wait()
    error = failed.value.error
    assert "agent 'sync' returned None, not an awaitable" in error
    assert "async def sync_fn(req, out)" in error
    assert "agent 'sync' returned None, not an awaitable" in caplog.text


async def test_a_sync_authenticate_hook_refuses_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def sync_hook(hello: Hello, info: ConnectInfo) -> Principal:
        return Principal("a")

    app = Unbroken(authenticate=sync_hook)  # type: ignore[arg-type]
    app.agent("echo")(lambda req, out: out.text("hi"))
    async with serve(app) as srv, asyncio.timeout(15):
        with pytest.raises(AuthError, match="authenticate hook is not async"):
            async with Client(srv.url, token="t", policy=FAST):
                pass  # refused at once (4002), not retried
    assert "the authenticate hook returned Principal(" in caplog.text
    assert "async def authenticate(hello, info)" in caplog.text


async def test_a_client_whose_first_connection_failed_can_be_entered_again() -> None:
    """A failed ``async with`` leaves the client as it was: nothing keeps trying in
    the background, and entering it again tries again (with a fresh budget)."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, never answers the upgrade

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"ws://127.0.0.1:{port}/ws", policy=FAST, open_timeout=30)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), client:
                pass  # never reached: the server never answers
        names = [t.get_name() for t in asyncio.all_tasks()]
        assert "unbroken-client" not in names
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/ws"
    client = Client(url, policy=FAST)
    for _ in range(2):  # the second try is a try, not "open already"
        with pytest.raises(ReconnectExhausted) as gave_up:
            async with asyncio.timeout(15), client:
                pass
        assert gave_up.value.attempts == 3
    assert "unbroken-client" not in [t.get_name() for t in asyncio.all_tasks()]


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"],
    ids=["not-http", "proxy-503"],
)
async def test_a_listener_that_is_no_unbroken_server_says_check_the_url(answer: bytes) -> None:
    """Only a close code the server sent means "the server closed every attempt";
    a listener that drops each connection, or a proxy's 503, is the address."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
    try:
        with pytest.raises(ReconnectExhausted) as gave_up:
            async with asyncio.timeout(15), Client(url, policy=FAST):
                pass
    finally:
        server.close()
        await server.wait_closed()
    text = str(gave_up.value)
    assert "check the URL and that the server is running" in text
    assert "the server closed every attempt" not in text
