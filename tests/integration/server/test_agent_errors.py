"""Agent errors must never wedge a stream (issue 13 item 11): ending a stream cannot
fail, and a write that fails leaves the log (and the part state) as it was, so every
reader can still read the answer exactly."""

from __future__ import annotations

from typing import Any

from unbroken.errors import PartError
from unbroken.protocol.events import Event, Kind
from unbroken.server import Output, Request

from .wire import Wire, assert_exact, end_of, text_of

Served = Any


async def read_twice(srv: Any, stream: str, live: list[Event]) -> list[Event]:
    """The answer as a late reader replays it; it must equal what the live reader got."""
    late = await Wire.open(srv.url)
    await late.replay(stream, late.cs.welcome.epoch)  # type: ignore[union-attr]
    again = await late.read_to_end(stream)
    await late.close()
    assert again == live
    return again


async def test_an_exception_message_with_a_lone_surrogate_still_ends_the_stream(
    served: Served,
) -> None:
    kit, srv = await served()

    @kit.app.agent("surrogate")
    async def surrogate(_req: Request, out: Output) -> None:
        await out.text("partial ")
        raise ValueError("bad \ud800 text")  # not encodable as UTF-8

    w = await Wire.open(srv.url)
    sid = await w.start("r1", "surrogate")
    events = await w.read_to_end(sid)  # before: no end was ever written (running forever)
    assert_exact(events)
    end = end_of(events)
    assert end.status == "failed" and end.error == "ValueError: bad \ufffd text"
    assert text_of(events) == "partial "
    meta = await kit.meta(sid)
    assert meta is not None and (meta.status, meta.error) == ("failed", end.error)
    await read_twice(srv, sid, events)
    await w.close()
    await kit.wait_idle()


async def test_a_huge_exception_message_is_cut_so_the_end_fits_a_frame(served: Served) -> None:
    kit, srv = await served()

    @kit.app.agent("huge")
    async def huge(_req: Request, _out: Output) -> None:
        raise RuntimeError("x" * 100_000)

    w = await Wire.open(srv.url)
    sid = await w.start("r1", "huge")
    end = end_of(await w.read_to_end(sid))
    assert end.status == "failed" and end.error.startswith("RuntimeError: xxx")
    assert len(end.error) <= 4096 and end.error.endswith("…")
    await w.close()
    await kit.wait_idle()


async def test_an_agent_that_catches_a_failed_write_and_goes_on_leaves_a_readable_log(
    served: Served,
) -> None:
    """A write to a new part fails (its text is not valid Unicode); the agent catches
    it and writes on to another part. Before: a phantom run was left in the log and
    every reader failed with ProtocolError."""
    kit, srv = await served()
    caught: list[BaseException] = []

    @kit.app.agent("goes_on")
    async def goes_on(_req: Request, out: Output) -> None:
        await out.text("a ")
        try:
            await out.text("\udc80 lone", part="other")
        except UnicodeEncodeError as exc:
            caught.append(exc)
        await out.text("b ")
        try:
            await out.chunk("text", "c \ud800")
        except UnicodeEncodeError as exc:
            caught.append(exc)
        await out.text("d")

    w = await Wire.open(srv.url)
    sid = await w.start("r1", "goes_on")
    events = await w.read_to_end(sid)
    assert_exact(events)
    assert len(caught) == 2
    assert end_of(events).status == "completed"
    assert text_of(events) == "a b d"
    assert not [e for e in events if e.part == "other"]  # the failed write left nothing
    await read_twice(srv, sid, events)
    await w.close()
    await kit.wait_idle()


async def test_a_failed_part_write_leaves_the_part_state_as_it_was(served: Served) -> None:
    """Part starts, ends and chunks that fail change neither the log nor what the
    agent's Output believes is open, so nothing orphaned is written after them."""
    kit, srv = await served()
    refused: list[str] = []

    @kit.app.agent("parts_fail")
    async def parts_fail(_req: Request, out: Output) -> None:
        # a part start the log cannot hold: the part is not open afterwards
        try:
            await out.emit(Event(0, Kind.PART_START, part="p", part_kind="text", mime="bad \ud800"))
        except UnicodeEncodeError:
            refused.append("emit start")
        try:
            await out.emit(Event(0, Kind.TEXT, part="p", body="orphan"))
        except PartError:
            refused.append("orphan chunk")
        # a mime no reader accepts (NUL) is refused before it reaches the log
        try:
            await out.start_part("q", "data", mime="a\x00b")
        except PartError:
            refused.append("nul mime")
        # a JSON fragment that fails is not part of what the part's end validates
        async with out.json("j") as j:
            await j.write('{"n": ')
            try:
                await j.write("\ud800")
            except UnicodeEncodeError:
                refused.append("json fragment")
            await j.write("1}")
        # a part end whose error text is not valid Unicode still closes the part
        await out.start_part("e", "text")
        await out.end_part("e", error="broken \udfff")
        await out.text("done")

    w = await Wire.open(srv.url)
    sid = await w.start("r1", "parts_fail")
    events = await w.read_to_end(sid)
    assert_exact(events)
    assert refused == ["emit start", "orphan chunk", "nul mime", "json fragment"]
    assert end_of(events).status == "completed"
    assert not [e for e in events if e.part in ("p", "q")]
    j_end = [e for e in events if e.kind is Kind.PART_END and e.part == "j"]
    assert [e.error for e in j_end] == [""]  # '{"n": 1}' is valid JSON
    e_end = [e for e in events if e.kind is Kind.PART_END and e.part == "e"]
    assert [e.error for e in e_end] == ["broken \ufffd"]
    assert text_of(events) == "done"
    await read_twice(srv, sid, events)
    await w.close()
    await kit.wait_idle()
