"""``unbroken serve --workers N``: N forked worker processes on one port.

Each worker is a whole server (its own event loop, hub, connection guard) with its
own listening socket bound to the same port with ``SO_REUSEPORT``: the kernel
spreads new connections over the workers by a hash of the connection's addresses,
evenly, and a busy worker does not take more than its share. (One socket shared
by all workers would let whichever worker wakes first accept a whole burst:
asyncio and uvloop both accept until the queue is empty.) The app must keep its
streams in a store every worker sees (a RedisStore): a start and each resume of
one stream may land on different workers.

The parent process only supervises: it forwards SIGTERM/SIGINT (drain: every
worker closes its connections with 1012, lets its runs finish within the grace,
and exits) and SIGHUP (reload the origin policy), reports a worker that dies
(a signal or an exit it was not asked for) and starts a new one in its place.
It never runs an event loop, so a fork starts from a clean state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("unbroken.workers")

#: exit code of a worker that could not start serving (uvicorn's STARTUP_FAILURE)
STARTUP_FAILURE = 3

_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM (a drain) when the supervisor
    dies, even by SIGKILL, so no orphaned worker keeps the port. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def describe_status(status: int) -> str:
    """A ``waitpid`` status in words: ``exit code 0``, ``killed by SIGKILL``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


@dataclass
class _Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Forks ``n`` workers running ``work(index)`` and keeps them running.

    ``work`` runs in the child and returns its exit code; the child then exits
    with ``os._exit`` (no parent state is torn down twice). A worker that exits
    with :data:`STARTUP_FAILURE`, or dies more than ``max_restarts`` times within
    ``restart_window`` seconds, stops the whole server (a crash loop is not
    served around). :meth:`run` returns the exit code for the parent: 0 after a
    clean drain.
    """

    def __init__(
        self,
        n: int,
        work: Callable[[int], int],
        *,
        max_restarts: int = 5,
        restart_window: float = 30.0,
        before_fork: Callable[[], None] | None = None,
        on_reap: Callable[[int], None] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self.work = work
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.before_fork = before_fork
        #: called with the pid of each worker reaped (dead, asked or not)
        self.on_reap = on_reap
        self.slots = [_Slot(i + 1) for i in range(n)]
        self.stopping = False
        #: workers that died unasked and were replaced (for logs and tests)
        self.replaced = 0

    # ------------------------------------------------------------ child side
    def _spawn(self, slot: _Slot) -> None:
        if self.before_fork is not None:
            self.before_fork()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent(parent)
                # SIGHUP reloads the origin policy (PolicyWatcher catches it); without
                # one it must not end the worker
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                code = self.work(slot.index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        slot.pid = pid
        slot.started = time.monotonic()
        log.info("worker %d started pid=%d", slot.index, pid)

    # ------------------------------------------------------------ parent side
    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def stop(self) -> None:
        """Drain: SIGTERM to every worker (each closes its connections with 1012)."""
        if not self.stopping:
            self.stopping = True
            log.info("stopping %d workers (SIGTERM: drain)", sum(1 for s in self.slots if s.pid))
            self._signal_all(signal.SIGTERM)

    def _reap(self) -> int | None:
        """Collect dead workers; replace those that died unasked. A code to exit
        with once the rest have stopped, when the server must stop."""
        verdict: int | None = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return verdict
            if pid == 0:
                return verdict
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            if self.on_reap is not None:
                try:
                    self.on_reap(pid)
                except Exception:
                    log.exception("on_reap failed for worker pid=%d", pid)
            how = describe_status(status)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d pid=%d stopped: %s", slot.index, pid, how)
                if code != 0:
                    verdict = verdict or 1
                continue
            if code == STARTUP_FAILURE:
                log.error("worker %d pid=%d could not start: stopping", slot.index, pid)
                verdict = STARTUP_FAILURE
                self.stop()
                continue
            now = time.monotonic()
            slot.restarts = [t for t in slot.restarts if now - t < self.restart_window]
            if len(slot.restarts) >= self.max_restarts:
                log.error(
                    "worker %d pid=%d died (%s), %d times in %.0f s: stopping",
                    slot.index,
                    pid,
                    how,
                    len(slot.restarts) + 1,
                    self.restart_window,
                )
                verdict = 1
                self.stop()
                continue
            slot.restarts.append(now)
            self.replaced += 1
            log.warning(
                "worker %d pid=%d died (%s) after %.1f s: its connections resume on the "
                "other workers; starting a new worker %d",
                slot.index,
                pid,
                how,
                now - slot.started,
                slot.index,
            )
            self._spawn(slot)

    def run(self) -> int:
        """Fork the workers, supervise until they have all stopped; the exit code."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for slot in self.slots:
                self._spawn(slot)
            verdict = 0
            while any(s.pid for s in self.slots):
                info = signal.sigtimedwait(_SIGNALS, 1.0)
                if info is not None:
                    if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                        self.stop()
                    elif info.si_signo == signal.SIGHUP:
                        log.info("SIGHUP: passed to the workers")
                        self._signal_all(signal.SIGHUP)
                code = self._reap()
                if code is not None:
                    verdict = verdict or code
            log.info("all workers stopped")
            return verdict
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
