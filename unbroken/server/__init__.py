"""The server: agents run in a hub, write to a stream log, connections are cursors."""

from .agent import Output, Principal, Request
from .app import Unbroken
from .config import ServerConfig
from .connection import ConnectInfo

__all__ = ["ConnectInfo", "Output", "Principal", "Request", "ServerConfig", "Unbroken"]
