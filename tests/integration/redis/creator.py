"""A creator process for the create-race tests: ``python -m tests.integration.redis.creator
URL PREFIX OWNER SCOPE REQ LEASE``.

It starts a :class:`RedisStore` create of ``REQ`` and holds it between the claim of the
req and writing the stream's meta: it prints ``claimed`` and waits for a line on stdin
(a test kills it -9 there, or stops and continues it), then finishes the create and
prints ``created <stream> <created>``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from unbroken.store.redis import RedisStore


async def main(url: str, prefix: str, owner: str, scope: str, req: str, lease: float) -> None:
    store = RedisStore(url, prefix=prefix, lease=lease)
    loop = asyncio.get_running_loop()
    real_pipeline = store._r.pipeline
    held = False

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a: Any, **k: Any) -> Any:
            nonlocal held
            if not held and any(c[0][0] == "HSET" for c in pipe.command_stack):
                held = True
                print("claimed", flush=True)
                await loop.run_in_executor(None, sys.stdin.readline)
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    store._r.pipeline = pipeline  # type: ignore[method-assign]
    try:
        made = await store.create(owner, req, 0.0, scope)
        print("created", made.stream, int(made.created), flush=True)
    except Exception as exc:
        print("refused", type(exc).__name__, exc, flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    u, p, o, s, r, lease = sys.argv[1:7]
    asyncio.run(main(u, p, o, s, r, float(lease)))
