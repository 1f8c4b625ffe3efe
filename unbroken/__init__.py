"""unbroken: streamed AI-agent answers that survive the network.

The names most apps need are here; the server and client parts load on first use,
so ``import unbroken`` stays light (a client does not import the server stack) and a
client-only install (``pip install unbroken``) can ``from unbroken import Client``. A
server name used without its extra raises :class:`MissingExtra`, which names the extra
to install (``pip install 'unbroken[server]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ApiError,
    AuthError,
    ChainMismatch,
    ConfigError,
    ConnectionLost,
    Forbidden,
    IntegrityError,
    JWKSUnavailable,
    KernelFaultError,
    LogDiverged,
    LogFull,
    LogUnavailable,
    MissingExtra,
    NameNotFound,
    NameTaken,
    Overloaded,
    PartError,
    ProtocolError,
    ReconnectExhausted,
    RequestRefused,
    RequestTimeout,
    StaleProducer,
    StoreUnavailable,
    StreamFailed,
    StreamGone,
    StreamTooLarge,
    UnbrokenError,
    UnknownAgent,
    UnsupportedVersion,
)

if TYPE_CHECKING:
    from .client import Answer, Client, Stream
    from .protocol.backoff import BackoffPolicy
    from .protocol.client_session import Cursor
    from .server import AdmissionLimits, OriginPolicy, Output, Principal, Request, Unbroken
    from .server.auth import JWTAuth
    from .store.memory import MemoryStore
    from .store.redis import RedisStore
    from .version import __version__


_LAZY: dict[str, str] = {
    # the client's session: not held by a server process (issue 21)
    "BackoffPolicy": ".protocol.backoff",
    "Cursor": ".protocol.client_session",
    "Answer": ".client",
    "Client": ".client",
    "Stream": ".client",
    "AdmissionLimits": ".server",
    "OriginPolicy": ".server",
    "Output": ".server",
    "Principal": ".server",
    "JWTAuth": ".server.auth",
    "Request": ".server",
    "Unbroken": ".server",
    "MemoryStore": ".store.memory",
    "RedisStore": ".store.redis",
    "__version__": ".version",  # reading package metadata imports email/socket: lazily
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unbroken' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        from ._extras import as_missing_extra

        missing = as_missing_extra(f"unbroken.{name}", exc)
        if missing is None:
            raise
        raise missing from exc


__all__ = [
    "AdmissionLimits",
    "Answer",
    "ApiError",
    "AuthError",
    "BackoffPolicy",
    "ChainMismatch",
    "Client",
    "ConfigError",
    "ConnectionLost",
    "Cursor",
    "Forbidden",
    "IntegrityError",
    "JWKSUnavailable",
    "JWTAuth",
    "KernelFaultError",
    "LogDiverged",
    "LogFull",
    "LogUnavailable",
    "MemoryStore",
    "MissingExtra",
    "NameNotFound",
    "NameTaken",
    "OriginPolicy",
    "Output",
    "Overloaded",
    "PartError",
    "Principal",
    "ProtocolError",
    "ReconnectExhausted",
    "RedisStore",
    "Request",
    "RequestRefused",
    "RequestTimeout",
    "StaleProducer",
    "StoreUnavailable",
    "Stream",
    "StreamFailed",
    "StreamGone",
    "StreamTooLarge",
    "Unbroken",
    "UnbrokenError",
    "UnknownAgent",
    "UnsupportedVersion",
    "__version__",
]
