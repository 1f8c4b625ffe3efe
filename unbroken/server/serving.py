"""How unbroken runs uvicorn: one place that builds the ``uvicorn.Config`` with the
connection guard and the WebSocket layer, for ``unbroken serve`` and for tests.

What it adds to plain uvicorn (details in docs/reference/security.md):

- :class:`~unbroken.server.guard.ConnectionGuard`: a handshake deadline, a cap on
  open connections (503 + ``Retry-After`` past it), an optional per-IP cap;
- :class:`~unbroken.server.websocket.UnbrokenWebSocketProtocol`: small client
  message limits (64 KiB before ``hello``, 1 MiB after, by default), and a clean
  1007 close for invalid UTF-8.

And :class:`PolicyWatcher`: ``unbroken serve --policy policy.toml`` reloads the
app's origin policy (:mod:`unbroken.server.policy`) on SIGHUP and when the file
changes.

Serving an app some other way (``uvicorn.run(app.asgi())``, hypercorn) works, but
without these: the app then still caps sessions (4008) and checks frame sizes when
it decodes them, after the WebSocket layer has read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS, WS_PROTOCOLS
from uvicorn.importer import import_from_string

from ..errors import ConfigError
from ..store.memory import MemoryStore
from .app import Unbroken
from .guard import ConnectionGuard, ConnectionLimits, accept_backlog, descriptor_limit
from .policy import LivePolicy
from .websocket import websocket_protocol

log = logging.getLogger(__name__)

#: uvicorn's default for any other ASGI app's largest message (16 MiB).
DEFAULT_WS_MAX_SIZE = 16 * 1024 * 1024


def uvicorn_config(
    app: Unbroken | Any,
    *,
    path: str = "/ws",
    ws_max_size: int | None = None,
    limits: ConnectionLimits | None = None,
    http: str = "auto",
    ws: str = "websockets-sansio",
    backlog: int = 2048,
    **kwargs: Any,
) -> tuple[uvicorn.Config, ConnectionGuard]:
    """A ``uvicorn.Config`` serving ``app`` behind a :class:`ConnectionGuard`.

    ``app`` is an :class:`Unbroken` (served as ``app.asgi(path)``, with its
    ``connection_limits``, ``max_hello_frame`` and ``max_client_frame``) or any
    ASGI app. ``ws_max_size`` overrides the largest client message after
    ``hello`` (default: the app's ``max_client_frame``; 16 MiB for another app);
    ``limits`` overrides the app's connection limits. ``http`` names uvicorn's
    HTTP implementation; ``ws`` its WebSocket one: ``websockets-sansio`` is the
    unbroken layer (:mod:`unbroken.server.websocket`); another is used as it is
    (guarded, but without the ``hello`` size limit and the clean 1007). Other
    keyword arguments go to ``uvicorn.Config``. ``backlog`` is cut to what the
    descriptors left by the connection cap can take (:func:`accept_backlog`);
    listen with the config's ``backlog``. The guard is returned for its
    :meth:`~ConnectionGuard.stats`; an :class:`Unbroken` app also keeps it as
    ``app.guard`` (``/healthz`` shows its figures when ``health_detail`` is on).
    """
    if isinstance(app, Unbroken):
        asgi: Any = app.asgi(path)
        max_size = ws_max_size if ws_max_size is not None else app.max_client_frame
        initial = min(app.max_hello_frame, max_size)
        limits = limits if limits is not None else app.connection_limits
    else:
        asgi = app
        max_size = ws_max_size if ws_max_size is not None else DEFAULT_WS_MAX_SIZE
        initial = max_size
    guard = ConnectionGuard(limits)
    nofile = descriptor_limit()
    if guard.max_connections + guard.max_refusing + 16 > nofile:
        log.warning(
            "max_connections=%d is above what the descriptor limit (%d) allows: accept() "
            "will fail before the cap is reached; raise ulimit -n or lower the cap",
            guard.max_connections,
            nofile,
        )
    if isinstance(app, Unbroken):
        app.guard = guard
        app.max_connections = guard.max_connections  # the descriptor limit may have moved
    http_class = import_from_string(HTTP_PROTOCOLS.get(http, http))
    if ws == "websockets-sansio":
        ws_class: Any = websocket_protocol(initial)
    else:
        ws_class = import_from_string(WS_PROTOCOLS.get(ws) or ws)
    config = uvicorn.Config(
        asgi,
        http=guard.http_protocol(http_class),
        ws=guard.ws_protocol(ws_class),
        ws_max_size=max_size,
        backlog=accept_backlog(backlog, guard.max_connections, nofile),
        **kwargs,
    )
    return config, guard


#: the event loops ``unbroken serve --loop`` takes
LOOPS = ("auto", "asyncio", "uvloop")


def uvloop_installed() -> bool:
    """Whether uvloop can be imported (the ``unbroken[server]`` extra)."""
    return importlib.util.find_spec("uvloop") is not None


def resolve_loop(loop: str) -> str:
    """The event loop ``loop`` names, for uvicorn: ``auto`` is ``uvloop`` when it
    is installed, else ``asyncio``. :class:`ConfigError` for ``uvloop`` when it
    is not installed, or a name not in :data:`LOOPS`."""
    if loop not in LOOPS:
        raise ConfigError(f"unknown event loop {loop!r}: expected one of {', '.join(LOOPS)}")
    if loop == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if loop == "uvloop" and not uvloop_installed():
        raise ConfigError(
            "uvloop is not installed: pip install 'unbroken[server]' (or use --loop asyncio)"
        )
    return loop


def describe_loop(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio`` and the running loop's class, for the log."""
    cls = type(loop)
    kind = "uvloop" if cls.__module__.startswith("uvloop") else "asyncio"
    return f"{kind} ({cls.__module__}.{cls.__qualname__})"


def check_workers(app: Unbroken | Any, workers: int) -> None:
    """:class:`ConfigError` unless ``app`` can be served by ``workers`` processes.

    Several workers need a store they all see: a start and each resume of one
    stream may land on different workers, so a per-process ``MemoryStore`` is
    refused. They also need ``SO_REUSEPORT`` and ``fork`` (Linux, BSD, macOS).
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        return
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers above 1 needs fork and SO_REUSEPORT (Linux, BSD, macOS)")
    if isinstance(app, Unbroken) and isinstance(app.store, MemoryStore):
        raise ConfigError(
            f"--workers {workers} needs a store every worker sees: this app keeps its "
            "streams in a MemoryStore (one per process), so a resume landing on another "
            "worker would find nothing. Use Unbroken(store=RedisStore(url)), or --workers 1"
        )


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, not yet listening. ``reuse_port``:
    with ``SO_REUSEPORT``, so each worker binds its own socket to the same port and
    the kernel spreads connections over them. ``proto=IPPROTO_TCP``: asyncio sets
    TCP_NODELAY on accepted sockets only then (no 40 ms Nagle stalls)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def with_limits(limits: ConnectionLimits, **changes: Any) -> ConnectionLimits:
    """``limits`` with the fields in ``changes`` that are not ``None`` replaced."""
    given = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(limits, **given) if given else limits


class PolicyWatcher:
    """Reloads ``policy`` from ``path`` on SIGHUP and when the file changes.

    The file is checked every ``interval`` seconds with one ``stat`` (its
    modification time, size and inode: an editor that writes a new file and
    renames it over the old one is seen too). A reload that fails (the file is
    gone, not TOML, not a valid policy) keeps the policy in force and logs why
    (:meth:`LivePolicy.reload`). Run :meth:`run` as a task on the server's loop;
    SIGHUP is caught only when that loop runs on the main thread.
    """

    def __init__(
        self, policy: LivePolicy, path: str | os.PathLike[str], interval: float = 1.0
    ) -> None:
        self.policy = policy
        self.path = Path(path)
        self.interval = interval
        #: reloads done (successful or not), for tests and logs
        self.reloads = 0
        self._wake = asyncio.Event()
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _reload(self, why: str) -> None:
        self.reloads += 1
        self._seen = self._signature()
        log.info("origin policy reload (%s) from %s", why, self.path)
        self.policy.reload(self.path)

    def hangup(self) -> None:
        """What SIGHUP does: reload now (also callable by hand)."""
        self._wake.set()

    async def run(self) -> None:
        """Watch until cancelled."""
        loop = asyncio.get_running_loop()
        hup = getattr(signal, "SIGHUP", None)
        caught = False
        if hup is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(hup, self.hangup)
                caught = True
        try:
            while True:
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel
                # that arrives as the event is set, and this loop would never end
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
                if self._wake.is_set():
                    self._wake.clear()
                    self._reload("SIGHUP")
                elif self._signature() != self._seen:
                    self._reload("file changed")
        finally:
            if caught and hup is not None:
                loop.remove_signal_handler(hup)
