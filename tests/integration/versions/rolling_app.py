"""The app the rolling-upgrade tests serve with ``unbroken serve`` on every node: the
``ticker`` agent on a RedisStore (``UNBROKEN_REDIS_URL``, ``UNBROKEN_REDIS_PREFIX``).

``ticker`` writes the tokens ``tok000000 `` … one event each (the shape
``tests/integration/redis/conftest.full_digest`` computes), flushing every ``every``
tokens and pausing ``pause`` s, until the file ``stop`` exists (or ``most`` tokens): an
answer that lasts as long as the test needs it to, whatever the machine's speed, and
whose every byte and digest are known from its length. ``hold_at``: after that many
tokens it flushes and waits for the file ``go`` (a cut at an exact point of the answer,
while it is still open)."""

from __future__ import annotations

import asyncio
import os

from unbroken.server import Output, Request, Unbroken
from unbroken.store.redis import RedisStore

store = RedisStore(
    os.environ.get("UNBROKEN_REDIS_URL", "redis://127.0.0.1:6379/0"),
    lease=float(os.environ.get("UNBROKEN_REDIS_LEASE", "5")),
    prefix=os.environ.get("UNBROKEN_REDIS_PREFIX", "versions"),
)
app = Unbroken(store=store, allow_anonymous=True)


def _exists(path: object) -> bool:
    """Whether the file named ``path`` exists (no name: never)."""
    return isinstance(path, str) and bool(path) and os.path.exists(path)


@app.agent("ticker")
async def ticker(req: Request, out: Output) -> None:
    """Tokens until the ``stop`` file exists (checked after each flush) or ``most``."""
    inp = req.input if isinstance(req.input, dict) else {}
    every, pause = int(inp.get("every", 20)), float(inp.get("pause", 0.05))
    most, hold_at = int(inp.get("most", 100_000)), int(inp.get("hold_at", 0))
    for i in range(most):
        await out.text(f"tok{i:06d} ")
        if i + 1 == hold_at:
            await out.flush()
            while not _exists(inp.get("go")):  # noqa: ASYNC110 - the test's go, polled
                await asyncio.sleep(pause)
        elif i % every == every - 1:
            await out.flush()
            if _exists(inp.get("stop")):
                return
            await asyncio.sleep(pause)
