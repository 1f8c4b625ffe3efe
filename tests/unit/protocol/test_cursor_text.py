"""A cursor as a compact string: str(cursor) and Cursor.parse round-trip exactly, and
anything else is a clear ConfigError (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken import ConfigError, Cursor
from unbroken.protocol.digest import seed

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=64)
cursors = st.builds(
    Cursor,
    stream=ids,
    seq=st.integers(min_value=0, max_value=2**53),
    digest=st.binary(min_size=16, max_size=16).map(bytes.hex),
    epoch=ids,
)


@given(cursors)
def test_a_cursor_round_trips_through_its_string(cursor: Cursor) -> None:
    text = str(cursor)
    assert Cursor.parse(text) == cursor
    assert text.isascii() and " " not in text and "/" not in text  # URL- and cookie-safe


@given(st.text(max_size=200))
def test_any_other_text_is_a_config_error_or_a_cursor_that_prints_back(text: str) -> None:
    try:
        cursor = Cursor.parse(text)
    except ConfigError:
        return
    assert str(cursor) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not a cursor"),
        ("ub2.s.0.00000000000000000000000000000000.e", "not a cursor"),
        ("ub1.s.01.00000000000000000000000000000000.e", "bad seq"),
        ("ub1.s.-1.00000000000000000000000000000000.e", "bad seq"),
        ("ub1.s.1.00000000000000000000000000000000ff.e", "bad digest"),
        ("ub1.s.1.0000000000000000000000000000000G.e", "bad digest"),
        ("ub1.s/x.1.00000000000000000000000000000000.e", "bad stream id"),
        ("ub1.s.1.00000000000000000000000000000000.", "bad epoch"),
        ("ub1.s.9999999999999999.00000000000000000000000000000000.e", "out of range"),
    ],
)
def test_a_bad_cursor_string_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Cursor.parse(text)


def test_a_real_cursor_is_compact() -> None:
    stream, epoch = "gswhC_L0BqAjoQGwSNxvgQ", "e" * 22
    text = str(Cursor(stream, 12345, seed(stream, epoch).hex(), epoch))
    assert len(text) < 100, text
