"""The sans-I/O core of protocol v1: frames, their items, events, digest chain, resume
contract, backoff and session state machines. No sockets, no asyncio, no clock:
time is always an argument.

The client's side (``ClientSession``, ``Cursor``, ``Backoff``, ``BackoffPolicy``) is
imported on first use: a server process does not hold it (~0.5 MB, issue 21).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ChainMismatch
from .codes import CLOSE_CODE_MEANING, CLOSE_CODE_RETRY, CloseCode, ErrorCode
from .digest import Chain, ChainVerifier, chain, seed, step, step_event
from .events import Event, Kind, payload
from .frames import (
    DEFAULT_MAX_FRAME,
    SUBPROTOCOLS,
    decode_client,
    decode_server,
    encode,
    encode_events_frame,
    encode_items,
    events_of,
    negotiate_subprotocol,
)
from .resume import StreamInfo, decide_resume
from .server_session import ServerSession, TokenBucket

if TYPE_CHECKING:
    from .backoff import Backoff, BackoffPolicy
    from .client_session import ClientSession, Cursor

_LAZY = {
    "Backoff": ".backoff",
    "BackoffPolicy": ".backoff",
    "ClientSession": ".client_session",
    "Cursor": ".client_session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unbroken.protocol' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "CLOSE_CODE_MEANING",
    "CLOSE_CODE_RETRY",
    "DEFAULT_MAX_FRAME",
    "SUBPROTOCOLS",
    "Backoff",
    "BackoffPolicy",
    "Chain",
    "ChainMismatch",
    "ChainVerifier",
    "ClientSession",
    "CloseCode",
    "Cursor",
    "ErrorCode",
    "Event",
    "Kind",
    "ServerSession",
    "StreamInfo",
    "TokenBucket",
    "chain",
    "decide_resume",
    "decode_client",
    "decode_server",
    "encode",
    "encode_events_frame",
    "encode_items",
    "events_of",
    "negotiate_subprotocol",
    "payload",
    "seed",
    "step",
    "step_event",
]
