"""One network namespace: run commands in it, start processes in it, or enter it.

* :meth:`Namespace.argv` is ``ip netns exec NAME cmd…`` (the command runs in the namespace);
  :meth:`Namespace.run` runs it to completion.
* :meth:`Namespace.start` starts a long-lived process (a server, a client script) whose
  output lines are kept with the monotonic time they were read: a test waits on a line,
  a benchmark times one.
* :meth:`Namespace.entered` moves the *calling thread* into the namespace (``setns``) for a
  block: every socket created in the block lives in the namespace for good, even after the
  block, so an in-process client connects from there and reconnects from there as long as
  its sockets are made inside the block.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ...errors import KernelFaultError
from .support import run, tool

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


class Namespace:
    """A named network namespace (made and deleted by :class:`~.topology.Topology`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[NamespacedProcess] = []

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def argv(self, *cmd: str) -> list[str]:
        """``cmd`` run inside this namespace (``ip netns exec``)."""
        return [tool("ip"), "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, stdin: str | None = None, timeout: float = 15.0) -> str:
        """Run ``cmd`` in this namespace to completion; its stdout
        (:class:`~.support.KernelFaultError` if it fails)."""
        return run(self.argv(*cmd), stdin=stdin, timeout=timeout)

    def ip(self, *args: str) -> str:
        """``ip -n NAME args…``."""
        return run([tool("ip"), "-n", self.name, *args])

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl (e.g. ``net.ipv4.ip_forward``) in this namespace."""
        with self.entered():
            Path("/proc/sys", *key.split(".")).write_text(value)

    def tcp_sockets(self, state: str = "connected", port: int | None = None) -> list[str]:
        """This namespace's TCP sockets in ``state`` (an ``ss`` state or group:
        ``established``, ``syn-sent``, ``connected``, ``listening``, ``all``…), with
        ``port`` as their local or remote port if given; one ``ss`` line each."""
        argv = [tool("ss"), "-H", "-t", "-n", "-N", self.name, "state", state]
        if port is not None:
            argv.append(f"( sport = :{port} or dport = :{port} )")
        return [line for line in run(argv).splitlines() if line.strip()]

    def start(
        self,
        *cmd: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> NamespacedProcess:
        """Start ``cmd`` in this namespace (stdout and stderr merged and kept line by
        line); it is stopped with the topology if still running."""
        proc = NamespacedProcess(self.argv(*cmd), env=env, cwd=cwd)
        self.processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        """Stop every process started here (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self.processes:
            proc.stop()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with the calling thread inside this namespace.

        Sockets made in the block stay in the namespace afterwards. Other threads (an
        executor's, a server thread's) are not moved. Not re-entrant across namespaces
        of different topologies that were deleted meanwhile.
        """
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(self.path, os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(back)


class NamespacedProcess:
    """A child process whose output lines are kept as ``(monotonic time, line)``.

    A thread reads the merged stdout and stderr, so lines are timed when the child
    wrote them (not when a test got round to looking), and no event loop is needed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.argv = list(argv)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._eof = False
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="netns-process-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def _read(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append((time.monotonic(), line))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output(self) -> str:
        """Everything the process printed so far."""
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def find(self, pattern: str, *, after: float = 0.0) -> tuple[float, re.Match[str]] | None:
        """The first line read at or after ``after`` (monotonic) matching ``pattern``."""
        rx = re.compile(pattern)
        with self._cond:
            for t, line in self.lines:
                if t >= after and (m := rx.search(line)):
                    return t, m
        return None

    def wait_line(
        self, pattern: str, limit: float = 15.0, *, after: float = 0.0
    ) -> tuple[float, re.Match[str]]:
        """Block until a line matching ``pattern`` is read (at or after ``after``):
        its read time and match. :class:`TimeoutError` (quoting the output) if none
        comes in ``limit`` s or the process ends first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + limit
        seen = 0
        with self._cond:
            while True:
                for t, line in self.lines[seen:]:
                    if t >= after and (m := rx.search(line)):
                        return t, m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "ended" if self._eof else f"printed no such line in {limit:.0f} s"
                    tail = "\n".join(line for _, line in self.lines[-40:])
                    raise TimeoutError(
                        f"{self.argv[-1] if self.argv else 'process'}: {why} "
                        f"(waiting for /{pattern}/); last lines:\n{tail}"
                    )
                self._cond.wait(left)

    async def await_line(
        self, pattern: str, limit: float = 15.0, *, after: float = 0.0
    ) -> tuple[float, re.Match[str]]:
        """:meth:`wait_line` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_line, pattern, limit, after=after)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` s; the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._reader.join(5)
        return self.popen.returncode


__all__ = ["CLONE_NEWNET", "KernelFaultError", "Namespace", "NamespacedProcess"]
