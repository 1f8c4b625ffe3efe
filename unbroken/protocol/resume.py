"""The resume contract: one request, exactly one answer.

A ``resume {stream, after, h, epoch}`` is answered by exactly one of
``resumed`` (events after ``after`` follow), ``resync`` (reserved in v1) or
``gone(reason)``. :func:`decide_resume` is the whole decision, as a pure function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .frames import Gone, Resume, Resumed


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the log knows about a stream, as the resume decision needs it.

    ``first`` is the lowest seq still held (1 when nothing was trimmed);
    ``expired`` marks a tombstone: the stream existed, its events are gone.
    """

    stream: str
    owner: str
    status: str
    head: int
    first: int = 1
    expired: bool = False


def decide_resume(
    request: Resume,
    *,
    principal: str,
    store_epoch: str,
    info: StreamInfo | None,
    digest_at: Callable[[int], bytes | None],
    anonymous: bool = False,
) -> Resumed | Gone:
    """Answer a resume request.

    The order of checks is part of the contract (docs/reference/protocol.md §Resume):
    epoch, existence and ownership (a stream of another principal and an unknown
    stream give the same answer, ``forbidden``, so nothing reveals whether it
    exists; with anonymous access there is no other principal and an unknown
    stream is ``unknown``), tombstone, position, digest.
    ``digest_at(seq)`` returns the log's digest after ``seq`` (the seed for 0),
    or ``None`` if it is no longer held.
    """
    sid = request.stream
    if request.epoch != store_epoch:
        return Gone(sid, "epoch", "the log's epoch changed: events were lost")
    if info is None or info.owner != principal:
        if info is None and anonymous:
            return Gone(sid, "unknown", "no such stream")
        return Gone(sid, "forbidden", "no such stream for this principal")
    if info.expired:
        return Gone(sid, "expired", "the stream's retention ended")
    if request.after > info.head:
        return Gone(sid, "diverged", f"client is at seq {request.after}, log head is {info.head}")
    if request.after < info.first - 1:
        return Gone(sid, "expired", f"events after {request.after} were trimmed")
    expected = digest_at(request.after)
    if expected is None:
        return Gone(sid, "expired", f"digest at {request.after} is no longer held")
    if request.h is None:
        if request.after != 0:
            return Gone(sid, "diverged", "a resume after seq > 0 must carry the digest h")
    elif bytes.fromhex(request.h) != expected:
        return Gone(sid, "diverged", f"digest at seq {request.after} differs from the log")
    return Resumed(sid, from_=request.after, head=info.head, status=info.status)  # type: ignore[arg-type]
