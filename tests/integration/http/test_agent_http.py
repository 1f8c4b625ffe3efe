"""Agent answers over plain HTTP (Durable Streams read path): an answer started over
WebSocket, read over SSE, long-poll and catch-up from any offset, exact by digest;
through the fault proxy; half over WebSocket and half over SSE; owner only; clear
errors. Real uvicorn, real sockets, httpx."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from unbroken.chaos import FaultProxy
from unbroken.client import Client
from unbroken.client.http_reader import HttpReader, format_offset, parse_offset
from unbroken.errors import AuthError, IntegrityError, StreamGone
from unbroken.protocol.events import Event, Kind

from ..server.conftest import Kit, authenticate, token
from .conftest import ServeKit

pytestmark = pytest.mark.timeout(90)


def text_of(events: list[Event]) -> str:
    return "".join(e.body for e in events if e.kind == Kind.TEXT)


async def finished(kit: Kit, srv_url: str, n: int, **extra: object) -> tuple[str, str]:
    """Start ``count`` with ``n`` tokens over WebSocket and read it to its end there;
    returns (stream id, the text the WebSocket client got)."""
    async with Client(srv_url, **extra) as c:  # type: ignore[arg-type]
        stream = await c.start("count", {"n": n, "yield_every": 50})
        answer = await stream.wait()
        return stream.id, answer.text


async def all_events(kit: Kit, stream: str) -> list[Event]:
    _epoch, events = await kit.app.store.read_all(stream)  # type: ignore[attr-defined]
    return list(events)


async def test_answer_started_over_websocket_is_read_over_sse_from_start_and_middle_exact(
    served: ServeKit,
) -> None:
    kit, srv = await served()
    stream, ws_text = await finished(kit, srv.url, 3000)
    logged = await all_events(kit, stream)
    meta = await kit.meta(stream)
    assert meta is not None and meta.status == "completed"
    async with HttpReader(srv.http) as reader:
        got = [ev async for ev in reader.events(stream)]
        assert got == logged
        assert text_of(got) == ws_text == "".join(token(i) for i in range(3000))
        assert reader.digest == meta.digest.hex()  # the end's offset carries the final digest
        assert reader.status == "completed" and reader.reconnects == 0
        middle = await kit.app.store.digest_at(stream, 1234)
        assert middle is not None
        rest = [ev async for ev in reader.events(stream, format_offset(1234, middle))]
        assert rest == logged[1234:]
        assert reader.digest == meta.digest.hex()


async def test_catch_up_and_long_poll_answers_follow_the_spec(served: ServeKit) -> None:
    kit, srv = await served()
    stream, _ = await finished(kit, srv.url, 500)
    meta = await kit.meta(stream)
    assert meta is not None
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.get(f"/v1/agent/{stream}")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.headers["stream-next-offset"] == format_offset(meta.head, meta.digest)
        assert r.headers["stream-up-to-date"] == "true"
        assert r.headers["stream-closed"] == "true"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        items = msgspec.json.decode(r.content)
        assert items[-1] == {"k": "end", "st": "completed", "n": meta.head}
        etag = r.headers["etag"]
        again = await http.get(f"/v1/agent/{stream}", headers={"if-none-match": etag})
        assert again.status_code == 304
        # at the end: an empty array, closed (the EOF signal)
        tail = r.headers["stream-next-offset"]
        r = await http.get(f"/v1/agent/{stream}", params={"offset": tail})
        assert r.status_code == 200 and r.content == b"[]"
        assert r.headers["stream-closed"] == "true"
        # a long-poll at the end of a finished stream answers at once: 204 closed
        r = await http.get(f"/v1/agent/{stream}", params={"offset": tail, "live": "long-poll"})
        assert r.status_code == 204 and r.headers["stream-closed"] == "true"
        head = await http.head(f"/v1/agent/{stream}")
        assert head.status_code == 200 and head.headers["stream-next-offset"] == tail
        for method in ("PUT", "POST", "DELETE"):
            r = await http.request(method, f"/v1/agent/{stream}")
            assert r.status_code == 405, method


async def test_live_sse_and_long_poll_readers_follow_a_running_answer_exact(
    served: ServeKit,
) -> None:
    kit, srv = await served()
    async with Client(srv.url) as c:
        stream = await c.start("count", {"n": 2000, "pause_at": 700, "gate": "g"})
        await kit.reached["g"].wait()
        sse = HttpReader(srv.http)
        poll = HttpReader(srv.http, live="long-poll")
        tasks = [asyncio.ensure_future(_collect(r.events(stream.id))) for r in (sse, poll)]
        kit.gates["g"].set()
        answer = await stream.wait()
        got = await asyncio.gather(*tasks)
    logged = await all_events(kit, stream.id)
    assert got[0] == logged and got[1] == logged
    assert text_of(got[0]) == answer.text
    for r in (sse, poll):
        assert r.status == "completed"
        await r.aclose()


async def _collect(it: object) -> list[Event]:
    return [ev async for ev in it]  # type: ignore[attr-defined]


FAULTS = [(m, f) for m in ("fin", "rst", "blackhole") for f in (0.1, 0.5, 0.9)]


@pytest.mark.parametrize(("mode", "fraction"), FAULTS)
@pytest.mark.parametrize("live", ["sse", "long-poll"])
async def test_reader_cut_by_the_fault_proxy_resumes_exact(
    served: ServeKit, mode: str, fraction: float, live: str
) -> None:
    """fin, rst and blackhole (bytes stop, the connection stays: found by a second of
    silence) at 10/50/90 % of the answer's bytes: the reader resumes from its last
    verified offset, exact."""
    kit, srv = await served()
    stream, ws_text = await finished(kit, srv.url, 20000)  # ~240 KB of items
    logged = await all_events(kit, stream)
    async with httpx.AsyncClient() as http:
        size = len((await http.get(f"{srv.http}/v1/agent/{stream}")).content)
    async with FaultProxy(f"127.0.0.1:{srv.port}") as proxy:
        cut = proxy.cut_after_bytes(int(size * fraction), mode=mode)  # type: ignore[arg-type]
        silence = 1.0 if mode == "blackhole" else 3.0
        async with HttpReader(
            f"http://{proxy.listen}",
            live=live,  # type: ignore[arg-type]
            silence=silence,
        ) as reader:
            got = [ev async for ev in reader.events(stream)]
            assert cut.fired.done()
            assert reader.reconnects >= 1
    assert got == logged
    assert text_of(got) == ws_text
    meta = await kit.meta(stream)
    assert meta is not None and reader.digest == meta.digest.hex()


async def test_an_answer_read_half_over_websocket_and_half_over_sse_is_exact(
    served: ServeKit,
) -> None:
    kit, srv = await served()
    async with Client(srv.url) as c:
        stream = await c.start("count", {"n": 4000, "pause_at": 3000, "gate": "g"})
        first: list[str] = []
        async for ev in stream:
            body = getattr(ev, "text", None) or getattr(ev, "delta", None)
            if isinstance(body, str):
                first.append(body)
            cur = stream.cursor
            if cur is not None and cur.seq >= 2000:
                break
        cursor = stream.cursor
        assert cursor is not None
    kit.gates["g"].set()
    offset = format_offset(cursor.seq, bytes.fromhex(cursor.digest))
    async with HttpReader(srv.http) as reader:
        rest = [ev async for ev in reader.events(stream.id, offset)]
    logged = await all_events(kit, stream.id)
    assert rest == logged[cursor.seq :]
    assert text_of(logged[: cursor.seq]) + text_of(rest) == "".join(token(i) for i in range(4000))
    meta = await kit.meta(stream.id)
    assert meta is not None and reader.digest == meta.digest.hex()


async def test_streams_are_read_by_their_owner_only(served: ServeKit) -> None:
    kit, srv = await served(authenticate=authenticate)
    stream, _ = await finished(kit, srv.url, 100, token="alice-token")
    async with httpx.AsyncClient(base_url=srv.http) as http:
        mine = await http.get(
            f"/v1/agent/{stream}", headers={"authorization": "Bearer alice-token"}
        )
        assert mine.status_code == 200
        theirs = await http.get(
            f"/v1/agent/{stream}", headers={"authorization": "Bearer bob-token"}
        )
        forged = await http.get(
            f"/v1/agent/{'A' * 22}", headers={"authorization": "Bearer bob-token"}
        )
        assert theirs.status_code == forged.status_code == 404
        assert theirs.content == forged.content
        anon = await http.get(f"/v1/agent/{stream}")
        assert anon.status_code == 401 and "bearer" in anon.headers["www-authenticate"].lower()
        bad = await http.get(f"/v1/agent/{stream}", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401
    async with HttpReader(srv.http, token="bob-token") as bob:
        with pytest.raises(StreamGone):
            [ev async for ev in bob.events(stream)]
    async with HttpReader(srv.http, token="nope") as nobody:
        with pytest.raises(AuthError):
            [ev async for ev in nobody.events(stream)]


async def test_bad_offsets_get_clear_answers(served: ServeKit) -> None:
    kit, srv = await served()
    stream, _ = await finished(kit, srv.url, 100)
    meta = await kit.meta(stream)
    assert meta is not None
    url = f"/v1/agent/{stream}"
    async with httpx.AsyncClient(base_url=srv.http) as http:
        for bad in ("12", "x" * 49, "0000000000000001_zz", ""):
            r = await http.get(url, params={"offset": bad})
            assert r.status_code == 400, bad
        wrong = format_offset(10, b"\x00" * 16)
        r = await http.get(url, params={"offset": wrong})
        assert r.status_code == 410 and r.headers["unbroken-gone"] == "diverged"
        past = format_offset(meta.head + 1, meta.digest)
        r = await http.get(url, params={"offset": past})
        assert r.status_code == 410 and r.headers["unbroken-gone"] == "diverged"
        r = await http.get(url, params={"live": "sse"})
        assert r.status_code == 400
        r = await http.get(url, params={"offset": "-1", "live": "websocket"})
        assert r.status_code == 400
    async with HttpReader(srv.http) as reader:
        with pytest.raises(StreamGone) as gone:
            [ev async for ev in reader.events(stream, wrong)]
        assert gone.value.reason == "diverged"
    assert parse_offset(format_offset(7, b"\x01" * 16)) == (7, b"\x01" * 16)


async def test_a_tampered_answer_is_an_integrity_error(served: ServeKit) -> None:
    """A proxy that alters one event in flight: the reader refuses the answer."""
    kit, srv = await served()
    stream, _ = await finished(kit, srv.url, 50)

    upstream = httpx.AsyncClient()

    async def tamper(request: httpx.Request) -> httpx.Response:
        r = await upstream.get(str(request.url).replace("http://tamper", srv.http))
        body = r.content.replace(token(7).encode(), b"t999999 ")
        headers = {k: v for k, v in r.headers.items() if k != "content-length"}
        return httpx.Response(r.status_code, headers=headers, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(tamper))
    async with HttpReader("http://tamper", live="long-poll", client=http) as reader:
        with pytest.raises(IntegrityError):
            [ev async for ev in reader.events(stream)]
    await http.aclose()
    await upstream.aclose()


async def test_origin_policy_applies_to_http_streams(served: ServeKit) -> None:
    kit, srv = await served()
    stream, _ = await finished(kit, srv.url, 10)
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.get(f"/v1/agent/{stream}", headers={"origin": "https://evil.example"})
        assert r.status_code == 403
        same = await http.get(f"/v1/agent/{stream}", headers={"origin": srv.http})
        assert same.status_code == 200
        assert same.headers["access-control-allow-origin"] == srv.http
        assert "stream-next-offset" in same.headers["access-control-expose-headers"]
        pre = await http.options(
            f"/v1/agent/{stream}",
            headers={
                "origin": srv.http,
                "access-control-request-method": "GET",
                "access-control-request-headers": "authorization, last-event-id",
            },
        )
        assert pre.status_code == 204
        assert "authorization" in pre.headers["access-control-allow-headers"]
        refused = await http.options(
            f"/v1/agent/{stream}",
            headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
        )
        assert refused.status_code == 400


async def test_sse_resumes_from_last_event_id_as_an_event_source_does(served: ServeKit) -> None:
    """A raw SSE client: read some events, drop the connection, reconnect to the same
    URL with ``Last-Event-ID`` = the last control event's id: the answer goes on
    right after it, nothing repeated or lost."""
    kit, srv = await served()
    stream, _ = await finished(kit, srv.url, 20000)  # several SSE batches
    logged = await all_events(kit, stream)
    url = f"{srv.http}/v1/agent/{stream}"
    params = {"offset": "-1", "live": "sse"}
    items: list[object] = []
    last_id = ""
    async with httpx.AsyncClient() as http:
        async with http.stream("GET", url, params=params) as r:
            assert r.headers["content-type"] == "text/event-stream"
            event, data = "", []
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("id:"):
                    last_id = line[3:].removeprefix(" ")
                elif not line:
                    if event == "data":
                        items += msgspec.json.decode("\n".join(data))
                    event, data = "", []
                    if last_id:
                        break  # drop the connection after the first control event
        seq, _ = parse_offset(last_id)
        assert 0 < seq == len(items) < len(logged)
        async with HttpReader(srv.http) as reader:
            # the reader's SSE reconnects send Last-Event-ID too; here a raw one does
            async with http.stream(
                "GET", url, params=params, headers={"last-event-id": last_id}
            ) as resumed:
                async for line in resumed.aiter_lines():
                    if line.startswith("data:["):
                        first = msgspec.json.decode(line[5:])
                        break
            rest = [ev async for ev in reader.events(stream, last_id)]
    assert rest == logged[seq:]
    # the resumed response starts with event seq+1, in the explicit form of a new batch
    assert first[0] == {"k": "text", "p": logged[seq].part, "d": logged[seq].body}
