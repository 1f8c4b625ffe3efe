"""The partial-JSON parser a client shows a JSON part with while it streams
(:func:`unbroken.client.response.parse_partial_json`), checked directly: for any
JSON value and any prefix of any serialisation of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from unbroken.client.response import parse_partial_json

PROPERTY = settings(max_examples=300, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
#: json.dumps's layouts: compact, default, indented; ASCII escapes or raw Unicode
layouts = st.sampled_from(
    [
        {"separators": (",", ":")},
        {},
        {"indent": 2},
        {"separators": (",", ":"), "ensure_ascii": False},
        {"indent": 1, "ensure_ascii": False},
    ]
)


def utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def covers(new: Any, old: Any) -> bool:
    """``new`` (a longer prefix's result) holds everything ``old`` held, except that
    the number being typed last may have changed or gone (``[1`` → ``[1.`` → ``[1.5``:
    ``1.`` is not a number yet, and ``1`` is one)."""
    if old is None or (is_number(old) and (new is None or is_number(new))):
        return True
    if isinstance(old, str):  # in UTF-16 code units: "\\ud800" shows half a pair first
        return isinstance(new, str) and utf16(new).startswith(utf16(old))
    if isinstance(old, bool) or is_number(old):
        return type(new) is type(old) and new == old
    if isinstance(old, list):
        if not isinstance(new, list):
            return False
        if not old:
            return True
        if len(new) < len(old):  # only the number being typed may be gone
            return len(new) == len(old) - 1 and is_number(old[-1]) and new == old[:-1]
        return new[: len(old) - 1] == old[:-1] and covers(new[len(old) - 1], old[-1])
    assert isinstance(old, dict)
    if not isinstance(new, dict):
        return False
    ok, nk = list(old), list(new)
    if not ok:
        return True
    if len(nk) < len(ok):
        return nk == ok[:-1] and is_number(old[ok[-1]]) and all(new[k] == old[k] for k in nk)
    last = ok[-1]
    return (
        nk[: len(ok)] == ok
        and all(new[k] == old[k] for k in ok[:-1])
        and covers(new[last], old[last])
    )


def prefixes(text: str) -> list[str]:
    return [text[:i] for i in range(len(text) + 1)]


@PROPERTY
@given(value=values, layout=layouts)
def test_the_whole_text_parses_as_json_loads_does(value: Any, layout: dict[str, Any]) -> None:
    text = json.dumps(value, **layout)
    assert parse_partial_json(text) == json.loads(text)


@PROPERTY
@given(value=values, layout=layouts)
@example(value=["a\\b"], layout={})  # an escaped backslash at the end of a prefix
def test_no_prefix_raises_and_each_is_a_partial_view_of_the_value(
    value: Any, layout: dict[str, Any]
) -> None:
    text = json.dumps(value, **layout)
    for prefix in prefixes(text):
        got = parse_partial_json(prefix)
        assert covers(value, got), (prefix, got)


@PROPERTY
@given(value=values, layout=layouts)
def test_a_longer_prefix_never_shows_less_but_the_number_being_typed(
    value: Any, layout: dict[str, Any]
) -> None:
    """Escapes included: a half-typed escape waits for the rest of it."""
    text = json.dumps(value, **layout)
    results = [parse_partial_json(p) for p in prefixes(text)]
    for i in range(1, len(results)):
        assert covers(results[i], results[i - 1]), (text[:i], results[i - 1], results[i])


@given(text=st.text(max_size=40))
def test_any_text_at_all_never_raises(text: str) -> None:
    parse_partial_json(text)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", None),
        ("[", []),
        ('{"a": ', {}),
        ('{"a": "he', {"a": "he"}),
        ('{"a": [1, tr', {"a": [1]}),
        ('{"a": [1, true', {"a": [1, True]}),
        ('{"a": 1, "b', {"a": 1}),
        ("[1.", []),
        ('"abc', "abc"),
    ],
)
def test_examples_of_what_a_prefix_shows(prefix: str, expected: Any) -> None:
    assert parse_partial_json(prefix) == expected


@pytest.mark.parametrize(
    ("shorter", "longer"),
    [
        ('["a', '["a\\u00'),  # a \u escape half typed: [] after ["a"]
        ('{"k": "a', '{"k": "a\\u'),  # {} after {"k": "a"}
        ('["a', '["a\\\\'),  # an escaped backslash, complete: [] after ["a"]
    ],
)
def test_an_unfinished_escape_keeps_the_string_typed_so_far(shorter: str, longer: str) -> None:
    assert covers(parse_partial_json(longer), parse_partial_json(shorter))


def test_a_prefix_never_shows_half_a_surrogate_pair() -> None:
    got = parse_partial_json(json.dumps(["\U0001f600"])[:8])  # '["\\ud83d'
    json.dumps(got, ensure_ascii=False).encode()


# ------------------------------------------------------------------ jiter = the parser it replaced
def typed(value: Any) -> Any:
    """``value`` with every scalar tagged by its type (``1 == 1.0 == True`` in Python;
    a float by its exact bits), so two results compare equal only if they are the same."""
    if isinstance(value, list):
        return ["list", [typed(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", [(k, typed(v)) for k, v in value.items()]]
    if isinstance(value, float):
        return ["float", value.hex()]
    return [type(value).__name__, value]


@settings(max_examples=120, deadline=None)
@given(value=values, layout=layouts)
@example(value={"a": [1, 2.5e3, True, None, "x\u00e9\U0001f600y"], "bb": {"c": -12}}, layout={})
def test_jiter_gives_the_hand_written_parsers_value_for_every_prefix(
    value: Any, layout: dict[str, Any]
) -> None:
    """parse_partial_json is jiter's partial mode since it replaced the hand-written parser
    (kept as benchmarks/partial_json.py's baseline): the same value, of the same types,
    for every prefix of every layout."""
    from benchmarks.partial_json import hand_written

    text = json.dumps(value, **layout)
    for prefix in prefixes(text):
        assert typed(parse_partial_json(prefix)) == typed(hand_written(prefix)), prefix


@pytest.mark.parametrize(
    "text",
    ["[" * 5000, '{"a":' * 5000, '"\ud83d', '["a\udc00b"', "[1]x", "\x00"],
)
def test_deep_nesting_lone_surrogates_and_garbage_give_a_value_or_none(text: str) -> None:
    got = parse_partial_json(text)
    assert got is None or isinstance(got, list | dict | str)
