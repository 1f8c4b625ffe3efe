"""The ``Cookie`` header as an ``authenticate`` hook sees it (``ConnectInfo.cookies``)."""

from __future__ import annotations

import pytest

from unbroken.server.asgi import parse_cookies


@pytest.mark.parametrize(
    ("header", "cookies"),
    [
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ('sid="xy z"; bare', {"sid": "xy z", "": "bare"}),
        ("  =v; k=; t=a=b", {"": "v", "k": "", "t": "a=b"}),
        ("", {}),
        (";;", {}),
        ("a=1;a=2", {"a": "2"}),
    ],
)
def test_cookies_are_read_leniently(header: str, cookies: dict[str, str]) -> None:
    assert parse_cookies(header) == cookies
