"""Regressions found by the fuzzer (``tests/integration/server/test_fuzz.py``): each
is the exact input that failed before its fix, over a real socket."""

from __future__ import annotations

import logging

import httpx
import pytest

from .conftest import ServeKit


@pytest.mark.parametrize("path", ["a%00b", "%0A", "x%7Fy", "%E2%9C%93%20ok"])
async def test_a_byte_stream_path_with_control_characters_is_created_with_a_valid_location(
    served: ServeKit, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Before: ``PUT /v1/stream/a%00b`` created the stream, then its ``Location`` header
    held the raw NUL, which h11 refuses: a traceback at ERROR and the connection dropped
    without an answer. The location is now percent-encoded as the request's path was."""
    caplog.set_level(logging.INFO)
    _kit, srv = await served()
    async with httpx.AsyncClient(base_url=srv.http) as http:
        r = await http.put(f"/v1/stream/{path}", content=b"x")
        assert r.status_code == 201, r.text
        assert r.headers["location"].endswith(f"/v1/stream/{path}")
        r = await http.get(r.headers["location"], params={"offset": "-1"})
        assert r.status_code == 200 and r.content == b"x"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
