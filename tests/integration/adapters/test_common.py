"""What all adapters share: part ids, the missing-extra error, ids across turns."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.adapters._common import events, part_id
from unbroken.errors import ConfigError
from unbroken.protocol.events import PART_ID_RE


@given(st.text(max_size=200))
def test_any_name_becomes_a_valid_part_id(name: str) -> None:
    pid = part_id(name)
    assert PART_ID_RE.match(pid)
    assert len(pid) <= 56  # room for a "-NNNN" suffix on a later turn
    if PART_ID_RE.match(name) and len(name) <= 56:
        assert pid == name  # a valid short id is kept as is


@given(st.text(min_size=57, max_size=80), st.text(max_size=20), st.text(max_size=20))
def test_long_ids_with_a_common_prefix_stay_apart(prefix: str, a: str, b: str) -> None:
    if a != b:
        assert part_id(prefix + a) != part_id(prefix + b)


@pytest.mark.parametrize(
    ("module", "extra"),
    [("openai", "openai"), ("anthropic", "anthropic"), ("pydantic_ai", "pydantic-ai")],
)
def test_an_adapter_without_its_sdk_names_the_extra(module: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from unbroken.errors import ConfigError\n"
        "try:\n"
        f"    import unbroken.adapters.{module}\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"pip install 'unbroken[{extra}]'" in done.stdout


def test_the_agents_sdk_adapter_imports_without_the_sdk_and_names_its_extra() -> None:
    code = (
        "import sys; sys.modules['agents'] = None\n"
        "import unbroken.adapters.openai_agents\n"  # events are duck-typed: no SDK import
        "sys.modules['openai'] = None\n"
        "del sys.modules['unbroken.adapters.openai_agents']\n"
        "sys.modules.pop('unbroken.adapters.openai', None)\n"
        "from unbroken.errors import ConfigError\n"
        "try:\n"
        "    import unbroken.adapters.openai_agents\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'unbroken[openai-agents]'" in done.stdout


async def _gen(n: int, hold: asyncio.Event | None = None) -> AsyncIterator[int]:
    for i in range(n):
        yield i
    if hold is not None:
        await hold.wait()  # the provider goes silent


async def test_a_silent_provider_stalls_after_the_limit() -> None:
    got: list[int] = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError, match=r"provider stream stalled: no event for 0.2s"):
        async for i in events(_gen(3, asyncio.Event()), 0.2):
            got.append(i)
    assert got == [0, 1, 2]
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_time_the_caller_spends_between_events_is_not_a_stall() -> None:
    got = []
    async for i in events(_gen(3), 0.1):
        await asyncio.sleep(0.3)  # the caller's own slow work, three times the limit
        got.append(i)
    assert got == [0, 1, 2]


async def test_a_cancel_while_waiting_stays_a_cancel() -> None:
    waiting = asyncio.Event()

    async def consume() -> None:
        async def slow() -> AsyncIterator[int]:
            waiting.set()
            await asyncio.Event().wait()
            yield 0

        async for _ in events(slow(), 30):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stall_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        async for _ in events(_gen(1), 0):
            pass
