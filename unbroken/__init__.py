"""unbroken: streamed AI-agent answers that survive the network."""

from .errors import (
    AuthError,
    ConfigError,
    Forbidden,
    IntegrityError,
    Overloaded,
    ProtocolError,
    ReconnectExhausted,
    StreamFailed,
    StreamGone,
    UnbrokenError,
)
from .protocol.backoff import BackoffPolicy

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BackoffPolicy",
    "ConfigError",
    "Forbidden",
    "IntegrityError",
    "Overloaded",
    "ProtocolError",
    "ReconnectExhausted",
    "StreamFailed",
    "StreamGone",
    "UnbrokenError",
    "__version__",
]
