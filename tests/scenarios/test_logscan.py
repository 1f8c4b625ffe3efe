"""Every run's logs are read: a protocol-error close, an exception or an ERROR line fails
the run with the line quoted; the warnings a fault provokes on purpose do not."""

from __future__ import annotations

import logging
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from unbroken.scenarios.catalog import RunSpec
from unbroken.scenarios.harness import ChaosHarness, LogCapture
from unbroken.scenarios.logscan import scan
from unbroken.scenarios.runner import run_one

server = logging.getLogger("unbroken.server.connection")
client = logging.getLogger("unbroken.client.client")

#: Lines a fault provokes on purpose, as the server and client log them: never a finding.
BENIGN: list[tuple[logging.Logger, int, str]] = [
    (server, logging.WARNING, "resume refused conn=4 stream=ab after=12 reason=expired"),
    (server, logging.WARNING, "send timeout conn=2 after=5.1s; dropping the connection"),
    (
        server,
        logging.WARNING,
        "peer silent conn=3 window full, nothing heard for 1.10s (limit 1.00s); "
        "dropping the connection",
    ),
    (server, logging.WARNING, "stream dropped while attached conn=3 stream=ab seq=40"),
    (server, logging.INFO, "close conn=3 code=4004 reason=peer silent"),
    (server, logging.INFO, "close conn=3 code=1006 reason=connection lost (no close frame)"),
    (server, logging.INFO, "close conn=5 code=1012 reason=server restarting"),
    (server, logging.WARNING, "error conn=5 code=rate_limited stream=- req=r1 message=slow"),
    (
        client,
        logging.INFO,
        "client disconnected url=ws://127.0.0.1:1/ws cause=close 4004: peer silent for too "
        "long (no frame for 0.81s (limit 0.75s)) code=4004",
    ),
    (client, logging.INFO, "client disconnected url=ws://x/ws cause=TimeoutError: timed out"),
]

#: Lines that must fail a run, and the kind of finding each is.
WRONG: list[tuple[logging.Logger, int, str, str]] = [
    (
        server,
        logging.WARNING,
        "protocol error conn=7 code=4000 reason=ack for stream ab that was not started",
        "protocol error",
    ),
    (server, logging.INFO, "close conn=7 code=4000 reason=bad frame", "protocol error"),
    (server, logging.INFO, "close conn=8 code=1011 reason=internal error", "protocol error"),
    (
        server,
        logging.WARNING,
        "error conn=2 code=bad_ack stream=ab req=- message=ack for a stream that was not "
        "started or resumed on this connection",
        "protocol error",
    ),
    (
        client,
        logging.INFO,
        "client disconnected url=ws://x/ws cause=close 4000: malformed, unknown or "
        "out-of-order frame (bad frame) code=4000",
        "protocol error",
    ),
    (client, logging.WARNING, "server error code=bad_ack message=ack for …", "protocol error"),
    (client, logging.ERROR, "integrity error stream=ab seq=9", "error line"),
    (logging.getLogger("unbroken.server.hub"), logging.CRITICAL, "out of memory", "error line"),
]


def test_the_scanner_flags_protocol_errors_exceptions_and_errors_not_fault_warnings() -> None:
    with LogCapture() as logs:
        for lg, level, message in BENIGN:
            lg.log(level, message)
        assert scan(logs.lines) == [], [f.describe() for f in scan(logs.lines)]
        for lg, level, message, _ in WRONG:
            lg.log(level, message)
        try:
            raise ValueError("boom")
        except ValueError:
            server.warning("a warning that carries a traceback", exc_info=True)
            client.exception("on_event callback failed")
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        logging.getLogger("asyncio").info("an info line of another library is not kept")
    findings = scan(logs.lines)
    kinds = [f.kind for f in findings]
    assert kinds == [k for *_, k in WRONG] + ["exception", "exception", "error line"]
    quoted = [f.describe() for f in findings]
    for (_, _, message, _), text in zip(WRONG, quoted, strict=False):
        assert message[:60] in text, text
    assert "[ValueError: boom]" in quoted[len(WRONG)]
    assert "Task exception was never retrieved" in quoted[-1] and "asyncio" in quoted[-1]
    assert not any("an info line of another library" in line.message for line in logs.lines)
    # the capture let go of every logger it held
    assert all(logs not in logging.getLogger(n).handlers for n in ("unbroken", "asyncio"))


def test_a_finding_quotes_its_line_and_stays_short() -> None:
    with LogCapture() as logs:
        server.warning("protocol error conn=1 code=4000 reason=%s", "x" * 1000)
    (finding,) = scan(logs.lines)
    text = finding.describe(logs.lines[0].t, width=120)
    assert text.startswith('protocol error (the server closed for a protocol error): "')
    assert '"0.0000 WARNING unbroken.server.connection: protocol error conn=1' in text
    assert len(text) < 200 and text.endswith('…"')


def test_a_close_the_run_provokes_on_purpose_passes_only_where_allowed() -> None:
    # a resume refused for its version (TC14's old client): 4005 seen by the client
    refused = (
        "client disconnected url=ws://x/ws cause=close 4005: no common protocol version code=4005"
    )
    with LogCapture() as logs:
        client.info(refused)
        server.info("close conn=7 code=4000 reason=bad frame")
    assert [f.why for f in scan(logs.lines)] == ["closed with code 4005", "closed with code 4000"]
    (other,) = scan(logs.lines, frozenset({4005}))
    assert other.why == "closed with code 4000"  # only the close allowed passes


def test_uvicorns_logger_is_kept_once_attached_again_after_it_reconfigured() -> None:
    import uvicorn

    with LogCapture() as logs:
        uvicorn.Config(app=None)  # configures logging: drops the handlers of its loggers
        logging.getLogger("uvicorn.error").error("Exception in ASGI application")
        assert scan(logs.lines) == []  # lost, until attached again
        logs.ensure_attached()
        logging.getLogger("uvicorn.error").error("Exception in ASGI application")
    assert [f.kind for f in scan(logs.lines)] == ["error line"]


async def test_a_run_whose_server_logs_a_protocol_error_fails_with_the_line_quoted(
    tmp_path: Path,
) -> None:
    async def bad_peer(h: ChaosHarness) -> int | None:
        # a client of its own beside the run sends what is not a frame
        async with connect(h.server.url, subprotocols=[Subprotocol("unbroken.v1")]) as ws:
            await ws.send("this is not a frame")
            await ws.wait_closed()
            return ws.close_code

    spec = RunSpec("TC1", "small", "mid", "clean", "rst")
    result = await run_one(spec, artefacts=tmp_path, beside=bad_peer)
    assert result.status == "fail"
    assert result.exact, "the run itself delivered every stream exactly"
    (failed,) = result.failed_checks()
    assert failed.name.startswith("logs clean")
    assert "protocol error conn=" in failed.detail and "code=4000" in failed.detail
    server_log = (tmp_path / result.id / "server.log").read_text()
    assert "protocol error conn=" in server_log


async def test_a_clean_run_passes_the_log_check(tmp_path: Path) -> None:
    result = await run_one(RunSpec("TC1", "small", "mid", "clean", "fin"), artefacts=tmp_path)
    check = next(c for c in result.checks if c.name.startswith("logs clean"))
    assert check.ok, check.detail
    assert check.detail.endswith("lines, none wrong")
