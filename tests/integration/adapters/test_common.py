"""What all adapters share: part ids, the missing-extra error, ids across turns."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.adapters._common import part_id
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
