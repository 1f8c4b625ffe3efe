"""The server: agents run in a hub, write to a stream log, connections are cursors.

Needs the ``server`` extra (``pip install 'unbroken[server]'``).
"""

from . import _deps  # noqa: F401  (first: without the server extra, MissingExtra names it)
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
