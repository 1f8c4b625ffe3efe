"""unbroken: streamed AI-agent answers that survive the network.

The names most apps need are here; the server and client parts load on first use,
so ``import unbroken`` stays light (a client does not import the server stack).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    ConfigError,
    Forbidden,
    IntegrityError,
    Overloaded,
    ProtocolError,
    ReconnectExhausted,
    RequestTimeout,
    StreamFailed,
    StreamGone,
    UnbrokenError,
)
from .protocol.backoff import BackoffPolicy
from .protocol.session import Cursor

if TYPE_CHECKING:
    from .client import Answer, Client, Stream
    from .server import Output, Principal, Request, Unbroken
    from .store.memory import MemoryStore
    from .store.redis import RedisStore

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Answer": ".client",
    "Client": ".client",
    "Stream": ".client",
    "Output": ".server",
    "Principal": ".server",
    "Request": ".server",
    "Unbroken": ".server",
    "MemoryStore": ".store.memory",
    "RedisStore": ".store.redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unbroken' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "Answer",
    "AuthError",
    "BackoffPolicy",
    "Client",
    "ConfigError",
    "Cursor",
    "Forbidden",
    "IntegrityError",
    "MemoryStore",
    "Output",
    "Overloaded",
    "Principal",
    "ProtocolError",
    "ReconnectExhausted",
    "RedisStore",
    "Request",
    "RequestTimeout",
    "Stream",
    "StreamFailed",
    "StreamGone",
    "Unbroken",
    "UnbrokenError",
    "__version__",
]
