"""Live origin policy (issue 15, part 4): ``app.policy.update(...)`` and ``unbroken
serve --policy policy.toml`` (SIGHUP, file change). New handshakes use the new policy
at once; open connections and their streams are never cut by a change; a resume after
a change is a new handshake, judged by the policy then in force."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from unbroken.protocol.client_session import ClientSession
from unbroken.server.policy import OriginPolicy

from .conftest import TIMEOUT, ServeKit, token
from .hardened import ServeProcess
from .wire import SUBPROTOCOL, Wire, assert_exact, text_of

A = "https://a.example"
B = "https://b.example"
ONLY_A = OriginPolicy(allowed_origins=(A,), allow_same_host=False)


async def open_wire(url: str, origin: str, session: ClientSession | None = None) -> Wire:
    """A protocol-level connection whose handshake carries ``Origin: origin``,
    welcomed (and resuming what ``session`` holds)."""
    ws = await connect(
        url,
        origin=Origin(origin),
        subprotocols=[SUBPROTOCOL],
        max_size=None,
        ping_interval=None,
        open_timeout=TIMEOUT,
        close_timeout=2,
        compression=None,
    )
    w = Wire(ws, session if session is not None else ClientSession())
    await w.hello()
    return w


async def status_of(url: str, origin: str) -> int:
    """101 if a handshake from ``origin`` is accepted, else the refusal's status."""
    try:
        ws = await connect(url, origin=Origin(origin), subprotocols=[SUBPROTOCOL])
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def test_a_change_mid_stream_leaves_the_stream_untouched(served: ServeKit) -> None:
    kit, srv = await served(policy=ONLY_A)
    w = await open_wire(srv.url, A)
    sid = await w.start("r1", "count", {"n": 300, "pause_at": 100, "gate": "g"})
    await asyncio.wait_for(kit.reached["g"].wait(), TIMEOUT)
    new = kit.app.policy.update(allowed_origins=[B])
    assert kit.app.policy.current is new
    assert await status_of(srv.url, A) == 403  # new handshakes: the new policy, at once
    assert await status_of(srv.url, B) == 101
    kit.gates["g"].set()
    events = await w.read_to_end(sid)
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(300))
    assert w.ws.close_code is None  # the same connection, never closed
    await w.close()


async def test_a_resume_after_a_change_is_judged_by_the_new_policy(served: ServeKit) -> None:
    kit, srv = await served(policy=ONLY_A)
    w = await open_wire(srv.url, A)
    sid = await w.start("r1", "count", {"n": 300, "pause_at": 100, "gate": "g"})
    await asyncio.wait_for(kit.reached["g"].wait(), TIMEOUT)
    await w.read_until_seq(sid, 50)
    kit.app.policy.update(allowed_origins=[B])
    w.abort()  # a network cut: the client comes back with a new handshake
    assert await status_of(srv.url, A) == 403
    kit.gates["g"].set()
    # the same session from an allowed origin resumes where it was
    w2 = await open_wire(srv.url, B, session=w.cs)
    events = w.events[sid] + await w2.read_to_end(sid)
    assert_exact(events)
    assert text_of(events) == "".join(token(i) for i in range(300))
    await w2.close()


async def test_an_update_from_another_thread_applies_to_the_next_handshake(
    served: ServeKit,
) -> None:
    kit, srv = await served(policy=ONLY_A)
    assert await status_of(srv.url, B) == 403
    t = threading.Thread(target=kit.app.policy.update, kwargs={"allowed_origins": [B]})
    t.start()
    await asyncio.to_thread(t.join)
    assert await status_of(srv.url, B) == 101


async def test_cors_follows_the_live_policy(served: ServeKit) -> None:
    kit, srv = await served(policy=ONLY_A)
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.get("/healthz", headers={"origin": A})
        assert r.headers["access-control-allow-origin"] == A
        kit.app.policy.update(allowed_origins=[B])
        r = await http.get("/healthz", headers={"origin": A})
        assert "access-control-allow-origin" not in r.headers
        r = await http.get("/healthz", headers={"origin": B})
        assert r.headers["access-control-allow-origin"] == B


# ------------------------------------------------------------------ unbroken serve --policy
def policy_file(path: Path, *origins: str) -> Path:
    allow = ", ".join(f'"{o}"' for o in origins)
    path.write_text(f"[origins]\nallow = [{allow}]\nsame_host = false\n")
    return path


async def test_serve_reloads_the_policy_file_on_sighup(tmp_path: Path) -> None:
    f = policy_file(tmp_path / "policy.toml", A)
    p = await ServeProcess.start("--policy", str(f), "--policy-poll", "0")
    try:
        url = f"ws://127.0.0.1:{p.port}/ws"
        await p.wait_line(r"origin policy loaded from .*policy\.toml version=2")
        assert await status_of(url, A) == 101
        assert await status_of(url, B) == 403
        await p.wait_line(r"origin refused .*'https://b\.example'.*reason=origin not allowed")
        policy_file(f, B)
        p.proc.send_signal(signal.SIGHUP)
        await p.wait_line(r"origin policy reloaded from .*policy\.toml version=3")
        assert await status_of(url, A) == 403
        assert await status_of(url, B) == 101
        # a bad file changes nothing, and says why
        f.write_text('[origins]\nallow = ["https://b.example/path"]\n')
        p.proc.send_signal(signal.SIGHUP)
        await p.wait_line(r"origin policy reload failed version=3 \(kept\): .*is not an origin")
        assert await status_of(url, B) == 101
        assert p.proc.returncode is None  # SIGHUP did not end the server
        p.proc.send_signal(signal.SIGTERM)  # the watcher does not hold up a clean exit
        assert await asyncio.wait_for(p.proc.wait(), 20) == 0
    finally:
        await p.stop()


async def test_serve_reloads_the_policy_file_when_it_changes(tmp_path: Path) -> None:
    f = policy_file(tmp_path / "policy.toml", A)
    p = await ServeProcess.start("--policy", str(f), "--policy-poll", "0.1")
    try:
        url = f"ws://127.0.0.1:{p.port}/ws"
        assert await status_of(url, B) == 403
        new = policy_file(tmp_path / "policy.new", B)
        new.replace(f)  # as an editor saves: a new file renamed over the old one
        await p.wait_line(r"origin policy reload \(file changed\)")
        await p.wait_line(r"origin policy reloaded from .* version=3")
        assert await status_of(url, B) == 101
        assert await status_of(url, A) == 403
    finally:
        await p.stop()


async def test_serve_refuses_a_bad_policy_file_at_start(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text('[origins]\nallow = "https://a.example"\n')
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("unbroken")),
        "serve",
        "examples.agent_app:app",
        "--policy",
        str(f),
        cwd=Path(__file__).parents[3],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"list of strings" in err
