"""An unbroken app whose stream log is Redis: run several nodes, resume on any.

Run two nodes on one Redis::

    UNBROKEN_REDIS_URL=redis://127.0.0.1:6379/0 unbroken serve examples.redis_app:app --port 8001
    UNBROKEN_REDIS_URL=redis://127.0.0.1:6379/0 unbroken serve examples.redis_app:app --port 8002

and start the ``count`` agent on one, e.g. input ``{"n": 5000, "every": 50, "pause": 0.01}``
(``n`` numbered tokens, sleeping ``pause`` seconds after every ``every`` tokens);
a client given both URLs resumes on the other node when one goes away.
``UNBROKEN_REDIS_LEASE`` sets the producer lease in seconds (default 5);
``UNBROKEN_REDIS_CLUSTER=1`` takes the URL as a seed node of a Redis Cluster.
This app lets anyone connect (``allow_anonymous=True``): a demo on localhost only.
"""

from __future__ import annotations

import asyncio
import os

from unbroken.server import Output, Request, Unbroken
from unbroken.store.redis import RedisStore

store = RedisStore(
    os.environ.get("UNBROKEN_REDIS_URL", "redis://127.0.0.1:6379/0"),
    lease=float(os.environ.get("UNBROKEN_REDIS_LEASE", "5")),
    prefix=os.environ.get("UNBROKEN_REDIS_PREFIX", "unbroken"),
    cluster=os.environ.get("UNBROKEN_REDIS_CLUSTER", "") not in ("", "0"),
    outage_timeout=float(os.environ.get("UNBROKEN_REDIS_OUTAGE_TIMEOUT", "30")),
)
app = Unbroken(store=store, allow_anonymous=True)


@app.agent("count")
async def count(req: Request, out: Output) -> None:
    """``n`` tokens ``tok000000 `` …, pausing ``pause`` s after every ``every`` tokens."""
    inp = req.input if isinstance(req.input, dict) else {}
    n, every, pause = int(inp.get("n", 1000)), int(inp.get("every", 50)), float(inp.get("pause", 0))
    for i in range(n):
        await out.text(f"tok{i:06d} ")
        if every and i % every == every - 1:
            await out.flush()
            await asyncio.sleep(pause)
