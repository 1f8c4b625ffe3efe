"""Version negotiation over a real socket: the server picks the newest version both
sides speak, per connection; no common version closes 4005 with the server's list,
and the client ends with ``UnsupportedVersion`` (never retried)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import unbroken
from unbroken.client import Client
from unbroken.errors import ConfigError
from unbroken.protocol import versions
from unbroken.protocol.codes import CloseCode
from unbroken.protocol.frames import Hello, encode
from unbroken.server import Output, Request, Unbroken
from unbroken.testing import serve

TIMEOUT = 10.0


def make_app(protocols: tuple[str, ...] | str) -> Unbroken:
    app = Unbroken(allow_anonymous=True, protocols=protocols)

    @app.agent("say")
    async def say(req: Request, out: Output) -> None:
        for word in ("one ", "two ", "three"):
            await out.text(word)

    return app


async def _close_of(url: str, offered: list[str] | None) -> tuple[int | None, str, str | None]:
    async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
        chosen = ws.subprotocol
        try:
            await ws.send(encode(Hello()).decode())
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or "", chosen


@pytest.fixture
async def v1_only() -> AsyncIterator[str]:
    async with serve(make_app("v1")) as srv:
        yield srv.url


async def test_an_unknown_version_is_closed_4005_with_the_servers_list(
    v1_only: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "unbroken")
    code, reason, chosen = await _close_of(v1_only, ["unbroken.v9"])
    assert code == CloseCode.UNSUPPORTED_VERSION
    # the client's own first offer is echoed: a browser fails a handshake whose answer
    # names none of the offered subprotocols and would never see this close
    assert chosen == "unbroken.v9"
    assert reason == "no common protocol version; server speaks v1"
    assert versions.server_versions(reason) == ("v1",)
    assert any("unsupported subprotocol" in r.getMessage() for r in caplog.records)


async def test_a_v1_only_server_serves_v1_to_pinned_and_default_clients(v1_only: str) -> None:
    # the default client offers "unbroken.v2, unbroken.v1": a v1-only server (as an
    # older release, which picks the first of its own list that was offered) answers v1
    for protocols in (("v1",), None):
        async with Client(v1_only, protocols=protocols) as client:
            answer = await (await client.start("say")).wait()
            assert answer.text == "one two three"
            assert client.version == "v1"
    async with connect(v1_only, subprotocols=["unbroken.v2", "unbroken.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "unbroken.v1"


async def test_a_client_offering_no_subprotocol_is_served_v1(v1_only: str) -> None:
    async with connect(v1_only) as ws:
        await ws.send(encode(Hello()).decode())
        welcome = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert '"t":"welcome"' in str(welcome)
        assert ws.subprotocol is None


@pytest.mark.parametrize(
    ("server", "client"), [(("v2",), ("v1",)), (("v1",), ("v2",))], ids=["v1-client", "v2-client"]
)
async def test_no_common_version_ends_the_client_with_unsupported_version(
    server: tuple[str, ...], client: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "unbroken")
    async with serve(make_app(server)) as srv:
        events: list[str] = []
        c = Client(srv.url, protocols=client, on_event=lambda e: events.append(e.kind))
        with pytest.raises(unbroken.UnsupportedVersion) as info:
            async with asyncio.timeout(TIMEOUT):
                async with c:
                    pass
        err = info.value
        assert err.client_versions == client
        assert err.server_versions == server
        assert f"this client speaks {client[0]}, the server speaks {server[0]}" in str(err)
        assert "reconnecting" not in events  # never retried
    assert any("unsupported subprotocol" in r.getMessage() for r in caplog.records)


async def test_each_connection_gets_the_newest_version_it_offers() -> None:
    async with serve(make_app(("v2", "v1"))) as srv:
        for offered, expected in ((None, "v2"), (("v1",), "v1"), (("v2",), "v2")):
            async with Client(srv.url, protocols=offered) as client:
                answer = await (await client.start("say")).wait()
                assert answer.text == "one two three"
                assert client.version == expected
        # an old client that offers only v1 (its subprotocol list) is answered v1
        for offer, chosen in (
            (["unbroken.v1"], "unbroken.v1"),
            (["unbroken.v2", "unbroken.v1"], "unbroken.v2"),
            (["unbroken.v1", "unbroken.v2"], "unbroken.v2"),
        ):
            async with connect(srv.url, subprotocols=offer) as ws:  # type: ignore[arg-type]
                assert ws.subprotocol == chosen


def test_unknown_protocol_names_are_refused_at_configuration() -> None:
    with pytest.raises(ConfigError, match="unknown protocol version 'v9'"):
        Unbroken(allow_anonymous=True, protocols=("v9",))
    with pytest.raises(ConfigError, match="unknown protocol version"):
        Client("ws://127.0.0.1:1/ws", protocols="v0")
    with pytest.raises(ConfigError, match="at least one"):
        versions.normalize("")


def test_unsupported_version_is_public_and_says_both_sides() -> None:
    err = unbroken.UnsupportedVersion(("v1",), ("v2",))
    assert isinstance(err, unbroken.ProtocolError)
    assert err.client_versions == ("v1",) and err.server_versions == ("v2",)
    assert "this client speaks v1, the server speaks v2" in str(err)
    assert err.close_code == CloseCode.UNSUPPORTED_VERSION


APP = make_app("v1")


def test_serve_refuses_an_unknown_protocols_flag() -> None:
    from typer.testing import CliRunner

    from unbroken.cli import app as cli

    target = "tests.integration.versions.test_v2_negotiation:APP"
    result = CliRunner().invoke(cli, ["serve", target, "--protocols", "v1,v7", "--port", "0"])
    assert result.exit_code == 2
    assert "unknown protocol version 'v7'" in result.output


async def test_large_messages_go_deflated_when_the_client_offers_zlib() -> None:
    from unbroken.scenarios.harness.tap import WireTap

    app = Unbroken(allow_anonymous=True)

    @app.agent("many")
    async def many(req: Request, out: Output) -> None:
        for i in range(20_000):
            await out.text(f"token {i:06d} ")

    expected = "".join(f"token {i:06d} " for i in range(20_000))
    tap = WireTap(app.asgi())
    async with serve(tap) as srv:
        for compression in (True, False):
            async with Client(srv.url, compression=compression) as client:
                answer = await (await client.start("many")).wait()
                assert answer.text == expected
            sent = [m for _, out, m in tap.connections[-1].raw if out and isinstance(m, bytes)]
            zipped = [m for m in sent if m[:2] == b"\x92\x0d"]
            assert bool(zipped) is compression
        # the tap reads the deflated messages: every event of the first answer counted
        events = [f for f in tap.connections[0].frames if f.kind == "events"]
        assert sum(f.count for f in events) == 20_003
