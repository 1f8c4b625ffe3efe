"""The cursor strings of tests/vectors/cursor.json, the file the JS client is held to
too (js/test/cursor.test.mjs): both sides format and parse cursors the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unbroken import Cursor
from unbroken.errors import ConfigError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "vectors" / "cursor.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("row", VECTORS["valid"], ids=lambda r: r["text"][:40])
def test_formats_and_parses(row: dict[str, Any]) -> None:
    cursor = Cursor(row["stream"], row["seq"], row["digest"], row["epoch"])
    assert str(cursor) == row["text"]
    assert Cursor.parse(row["text"]) == cursor


@pytest.mark.parametrize("row", VECTORS["invalid"], ids=lambda r: r["text"][:40])
def test_refuses(row: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=row["error"]):
        Cursor.parse(row["text"])
