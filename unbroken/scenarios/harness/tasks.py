"""Ending the helper tasks of a run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def reap(fut: asyncio.Future[Any]) -> None:
    """Cancel ``fut`` and wait for it, keeping a cancellation of the caller itself (a
    Ctrl-C) on its way: only ``fut``'s own cancellation and errors are swallowed."""
    fut.cancel()
    try:
        await fut
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:
        log.debug("reaped a task that failed", exc_info=True)
