"""The kernel fault toolkit itself: the topology forwards, each fault drops what it says
and only that, heal undoes everything, and nothing is left behind."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from unbroken.chaos.kernel import Topology, kernel_skip_reason, list_namespaces
from unbroken.chaos.kernel.support import support_of
from unbroken.chaos.kernel.topology import ROUTER_CLIENT_IF, ROUTER_SERVER_IF
from unbroken.errors import KernelFaultError

CLIENT_PORT, SERVER_PORT = 9001, 9000


def test_skip_reason_says_what_is_missing_and_how_to_get_it() -> None:
    assert "root" in str(support_of(root=False, missing=(), netns_error=None).skip_reason)
    reason = support_of(root=True, missing=("nft", "ethtool"), netns_error=None).skip_reason
    assert reason is not None
    assert "nft, ethtool" in reason and "apt-get install ethtool nftables" in reason
    blocked = support_of(root=True, missing=(), netns_error="Operation not permitted")
    assert blocked.skip_reason is not None and "Operation not permitted" in blocked.skip_reason
    assert support_of(root=True, missing=(), netns_error=None).skip_reason is None


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    reason = kernel_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with Topology() as topology:
        yield topology


@pytest.fixture
def udp(topo: Topology) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A UDP socket in the client namespace and one in the server namespace."""
    a = topo.addresses
    with topo.client.entered():
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind((a.client, CLIENT_PORT))
    with topo.server.entered():
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((a.server, SERVER_PORT))
    for s in (client, server):
        s.settimeout(2.0)
    try:
        yield client, server
    finally:
        client.close()
        server.close()
        topo.faults.heal()


def exchange(topo: Topology, client: socket.socket, server: socket.socket) -> tuple[bool, bool]:
    """Send one datagram each way; whether each arrived (a lost one times out)."""
    a = topo.addresses
    client.sendto(b"up", (a.server, SERVER_PORT))
    server.sendto(b"down", (a.client, CLIENT_PORT))
    return _arrived(server, b"up"), _arrived(client, b"down")


def _arrived(sock: socket.socket, payload: bytes) -> bool:
    sock.settimeout(0.3)
    try:
        return sock.recv(64) == payload
    except TimeoutError:
        return False


def test_the_router_forwards_both_ways_and_the_hosts_have_no_other_route(
    topo: Topology, udp: tuple[socket.socket, socket.socket]
) -> None:
    client, server = udp
    assert exchange(topo, client, server) == (True, True)
    assert client.getsockname()[0] == topo.addresses.client
    # the client namespace has only its link to the router
    routes = topo.client.ip("route", "show")
    assert f"default via {topo.addresses.client_gateway}" in routes
    assert len(routes.strip().splitlines()) == 2  # default + the link's own network


@pytest.mark.parametrize(
    ("direction", "arrives"),
    [("both", (False, False)), ("upstream", (False, True)), ("downstream", (True, False))],
)
def test_a_blackhole_drops_its_direction_only_and_counts_what_it_dropped(
    topo: Topology,
    udp: tuple[socket.socket, socket.socket],
    direction: str,
    arrives: tuple[bool, bool],
) -> None:
    client, server = udp
    fault = topo.faults.blackhole(direction)  # type: ignore[arg-type]
    assert exchange(topo, client, server) == arrives
    assert fault.dropped() == arrives.count(False)
    fault.remove()
    assert exchange(topo, client, server) == (True, True)
    assert fault.dropped() == arrives.count(False)  # kept after removal
    assert topo.faults.rules() == []


def test_loss_drops_about_the_share_asked_for(
    topo: Topology, udp: tuple[socket.socket, socket.socket]
) -> None:
    client, _ = udp
    sent = 2000
    with topo.faults.loss(20, "upstream") as fault:
        for _ in range(sent):
            client.sendto(b"x", (topo.addresses.server, SERVER_PORT))
        dropped = fault.dropped()
    # binomial(2000, 0.2): mean 400, sd 18; the bounds are 8 sd away
    assert 250 < dropped < 550, dropped


def test_drop_data_drops_tcp_segments_with_data_and_lets_bare_acks_through(
    topo: Topology,
) -> None:
    a = topo.addresses
    with topo.server.entered():
        listener = socket.create_server((a.server, SERVER_PORT))
    with topo.client.entered():
        conn = socket.create_connection((a.server, SERVER_PORT), timeout=2)
    peer, _ = listener.accept()
    peer.settimeout(0.5)
    conn.settimeout(2)
    try:
        with topo.faults.drop_data("upstream") as fault:
            conn.sendall(b"lost upstream")
            with pytest.raises(TimeoutError):
                peer.recv(64)
            # the server's data still arrives and is acked (its ACK-only replies pass)
            peer.sendall(b"x" * 100_000)
            got = 0
            while got < 100_000:
                got += len(conn.recv(65536))
            dropped = fault.dropped()
        assert dropped >= 1
        # healed: TCP retransmits what was dropped (its RTO has backed off meanwhile)
        peer.settimeout(10)
        assert peer.recv(64) == b"lost upstream"
    finally:
        for s in (conn, peer, listener):
            s.close()


def test_reset_aborts_established_connections_but_not_the_listener(topo: Topology) -> None:
    a = topo.addresses
    with topo.server.entered():
        listener = socket.create_server((a.server, SERVER_PORT))
    with topo.client.entered():
        conn = socket.create_connection((a.server, SERVER_PORT), timeout=2)
    peer, _ = listener.accept()
    try:
        assert topo.faults.reset(SERVER_PORT, side="server") == 1
        conn.settimeout(2)
        with pytest.raises(ConnectionResetError):
            conn.recv(64)  # the client got the RST
        assert topo.faults.reset(SERVER_PORT, side="server") == 0
        assert len(topo.server.tcp_sockets("listening", SERVER_PORT)) == 1
        with topo.client.entered():
            again = socket.create_connection((a.server, SERVER_PORT), timeout=2)
        again.close()
    finally:
        for s in (conn, peer, listener):
            s.close()


def test_bandwidth_installs_tbf_on_the_egress_toward_the_receiver_and_heal_removes_it(
    topo: Topology,
) -> None:
    down = topo.faults.bandwidth(1_000_000, "downstream")
    assert set(topo.faults.shapers()) == {ROUTER_CLIENT_IF}
    assert topo.faults.shapers()[ROUTER_CLIENT_IF]["options"]["rate"] == 125_000  # bytes/s
    topo.faults.bandwidth(2_000_000, "both")  # replaces the downstream one
    assert not down.active
    assert set(topo.faults.shapers()) == {ROUTER_CLIENT_IF, ROUTER_SERVER_IF}
    topo.faults.loss(5)
    topo.faults.heal()
    assert topo.faults.shapers() == {}
    assert topo.faults.rules() == []
    assert topo.faults.active == []


def test_entered_moves_only_the_block_and_sockets_stay_where_they_were_made(
    topo: Topology,
) -> None:
    outside = os.stat("/proc/thread-self/ns/net").st_ino
    with topo.client.entered():
        inside = os.stat("/proc/thread-self/ns/net").st_ino
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert inside != outside
        assert os.stat("/proc/thread-self/ns/net").st_ino == outside
        sock.bind((topo.addresses.client, 0))  # only the client namespace has this address
    finally:
        sock.close()


def test_topology_is_deleted_even_when_the_block_raises() -> None:
    reason = kernel_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    topology = Topology()
    with pytest.raises(RuntimeError, match="boom"), topology:
        names = {ns.name for ns in topology.namespaces}
        assert names <= set(list_namespaces())
        proc = topology.server.start("sleep", "60")
        raise RuntimeError("boom")
    assert not names & set(list_namespaces())
    assert proc.returncode is not None  # its processes were stopped too


def test_a_failing_command_says_which_and_why(topo: Topology) -> None:
    with pytest.raises(KernelFaultError, match=r"`.*nft.*` exited 1: .*"):
        topo.router.run("nft", "add", "rule", "inet", "unbroken", "nope", "drop")
