"""Fixtures for kernel-level fault tests: a client, router and server namespace, and a
real ``unbroken serve`` process in the server namespace. Skipped, with the reason, where
namespaces cannot be made (not root, or iproute2/nftables/ethtool missing)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from unbroken.chaos.kernel import NamespacedProcess, Topology, kernel_skip_reason
from unbroken.chaos.kernel.app import serve_app

PORT = 8000


@dataclass(frozen=True, slots=True)
class Net:
    """The topology and the server process in its server namespace."""

    topo: Topology
    server: NamespacedProcess
    url: str


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    reason = kernel_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with Topology() as topology:
        yield topology


@pytest.fixture(scope="module")
def server(topo: Topology) -> Iterator[NamespacedProcess]:
    proc = serve_app(topo, PORT)
    yield proc
    proc.stop()


@pytest.fixture
def net(topo: Topology, server: NamespacedProcess) -> Iterator[Net]:
    """The running server, with every fault healed after the test."""
    try:
        yield Net(topo, server, topo.server_url(PORT))
    finally:
        topo.faults.heal()
