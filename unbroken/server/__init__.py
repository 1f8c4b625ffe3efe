"""The server: agents run in a hub, write to a stream log, connections are cursors."""

from .admission import AdmissionLimits
from .agent import Output, Principal, Request
from .app import Unbroken
from .config import ServerConfig
from .connection import ConnectInfo
from .hub import redact_exception, reveal_exception
from .policy import LivePolicy, OriginPolicy

__all__ = [
    "AdmissionLimits",
    "ConnectInfo",
    "LivePolicy",
    "OriginPolicy",
    "Output",
    "Principal",
    "Request",
    "ServerConfig",
    "Unbroken",
    "redact_exception",
    "reveal_exception",
]
