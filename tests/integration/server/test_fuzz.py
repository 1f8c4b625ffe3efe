"""A stateful fuzzer against the real server over real sockets (see ``fuzz_kit``).

Each example is a connection (v1 or v2) sending a sequence of frames, valid and
mutated; after each, the invariants of :meth:`Harness.check_after` hold. The default
tier runs 6 connections and 5 request lists, derandomized (a few seconds); ``-m full`` runs
``UNBROKEN_FUZZ_EXAMPLES`` (default 2,000) random ones.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz_kit import Fuzz, Harness, HttpReq, Script, http_one, http_reqs, scripts

QUICK = settings(
    max_examples=6,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
QUICK_HTTP = settings(QUICK, max_examples=5)
LONG = settings(
    max_examples=int(os.environ.get("UNBROKEN_FUZZ_EXAMPLES", "2000")),
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness().start()
    try:
        yield h
        h.check_after()
        h.wait_canary()  # however few examples ran, one canary answer was checked
        assert h.canary_done >= 1, h.canary_failures
    finally:
        h.stop()


def run_one(h: Harness, script: Script) -> None:
    async def go() -> None:
        async with asyncio.timeout(60):
            await Fuzz(h, script).run()

    h.call(go(), timeout=90)
    h.check_after()
    h.examples += 1


@QUICK
@given(script=scripts)
def test_fuzzed_frame_sequences_get_documented_answers_and_harm_no_one(
    harness: Harness, script: Script
) -> None:
    run_one(harness, script)


@pytest.mark.full
@pytest.mark.timeout(3600)
@LONG
@given(script=scripts)
def test_fuzzed_frame_sequences_long(harness: Harness, script: Script) -> None:
    run_one(harness, script)


def run_http(h: Harness, reqs: list[HttpReq]) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(base_url=h.http, timeout=5) as client:
            for i, r in enumerate(reqs):
                problem = await http_one(h, client, r, i)
                assert not problem, problem

    h.call(go(), timeout=90)
    h.check_after()
    h.examples += 1


@QUICK_HTTP
@given(reqs=st.lists(http_reqs, min_size=1, max_size=6))
def test_fuzzed_http_requests_get_documented_answers_and_harm_no_one(
    harness: Harness, reqs: list[HttpReq]
) -> None:
    run_http(harness, reqs)


@pytest.mark.full
@pytest.mark.timeout(3600)
@LONG
@given(reqs=st.lists(http_reqs, min_size=1, max_size=6))
def test_fuzzed_http_requests_long(harness: Harness, reqs: list[HttpReq]) -> None:
    run_http(harness, reqs)
