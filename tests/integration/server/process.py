"""A child process whose stderr is read line by line as it comes (for tests that run
``unbroken serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import re


class Process:
    """A child process whose stderr is read line by line as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new.set()
        self._new.set()

    async def wait_line(self, pattern: str, limit: float = 15) -> re.Match[str]:
        async with asyncio.timeout(limit):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if m := re.search(pattern, line):
                        return m
                seen = len(self.lines)
                if self._reader.done():
                    raise AssertionError("process ended:\n" + "\n".join(self.lines))
                self._new.clear()
                await self._new.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)
        self._reader.cancel()
