"""Faults made by the kernel, in the router namespace between a client and a server.

Drops are nft rules in the router's ``forward`` hook (every packet, only TCP segments
that carry data, or a random share): the packets are lost on the path, as on a real
network. (A drop in the sender's own ``output`` hook is not a silent path:
the kernel tells the sending socket, and TCP gets ``EPERM``.) Bandwidth is a ``tbf``
qdisc on the router's egress interface; a reset is ``ss -K``, which aborts matching
sockets in one namespace and sends the peer an RST.

Directions are named after the flow of the answer, as :meth:`FaultProxy.asymmetric
<unbroken.chaos.FaultProxy.asymmetric>` names them:

* ``upstream``: client → server (requests, acks, pings). Losing it is a
  **receive-only** failure for the server: it hears nothing while its sends still
  arrive. That holds for :meth:`RouterFaults.drop_data`; a :meth:`RouterFaults.blackhole`
  of one direction drops TCP's ACKs too, so the other direction stalls once a
  congestion window is in flight (to the application, both directions go quiet);
* ``downstream``: server → client (the answer). Losing it is a **send-only** failure;
* ``both``: nothing passes and nothing closes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from ...errors import KernelFaultError
from .namespace import Namespace
from .support import run, tool

Direction = Literal["both", "upstream", "downstream"]
Side = Literal["server", "client", "both"]
FaultKind = Literal["blackhole", "data", "loss", "bandwidth"]

DIRECTIONS: tuple[Direction, ...] = ("both", "upstream", "downstream")
TABLE = "unbroken"
CHAIN = "forward"
_HANDLE = re.compile(r"# handle (\d+)\s*$")
# numgen's modulus: loss percentages to two decimals
_LOSS_SCALE = 10_000
# a bare TCP ACK is at most 20 (IPv4) + 20 (TCP) + 40 (options: timestamps, SACK) bytes
_BARE_ACK_MAX = 80


@dataclass(eq=False)
class Fault:
    """One fault installed on the router; :meth:`remove` it, or use it as a context
    manager (removed on exit).

    ``requested_at`` and ``installed_at`` are ``time.monotonic()`` just before the
    command ran and just after it returned (the kernel applies the fault in between).
    """

    kind: FaultKind
    direction: Direction
    detail: str
    requested_at: float
    installed_at: float
    removed_at: float | None = None
    _owner: RouterFaults | None = field(default=None, repr=False)
    _rules: tuple[int, ...] = field(default=(), repr=False)
    _devices: tuple[str, ...] = field(default=(), repr=False)
    _final_dropped: int | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.removed_at is None

    def dropped(self) -> int:
        """Packets this fault dropped so far (nft counters; tbf's drops)."""
        if self._final_dropped is not None:
            return self._final_dropped
        assert self._owner is not None
        return self._owner._dropped_by(self)

    def remove(self) -> None:
        """Undo this fault (idempotent); its drop count is kept."""
        if self.removed_at is not None:
            return
        assert self._owner is not None
        self._final_dropped = self._owner._dropped_by(self)
        self._owner._remove(self)
        self.removed_at = time.monotonic()

    def __enter__(self) -> Fault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "direction": self.direction,
            "detail": self.detail,
            "installed_at": self.installed_at,
            "removed_at": self.removed_at,
            "dropped": self.dropped(),
        }


class RouterFaults:
    """The fault controls of a :class:`~.topology.Topology` (``topology.faults``).

    ``client_side`` and ``server_side`` are the router's interfaces toward the client
    and toward the server.
    """

    def __init__(
        self,
        router: Namespace,
        client: Namespace,
        server: Namespace,
        *,
        client_side: str,
        server_side: str,
    ) -> None:
        self.router = router
        self.client = client
        self.server = server
        self.client_side = client_side
        self.server_side = server_side
        self.active: list[Fault] = []
        self.history: list[Fault] = []

    # ------------------------------------------------------------ setup
    def install_table(self) -> None:
        """Create the (empty) nft table and forward chain in the router."""
        self._nft(
            f"table inet {TABLE} {{\n"
            f"  chain {CHAIN} {{ type filter hook forward priority 0; policy accept; }}\n"
            "}\n"
        )

    # ------------------------------------------------------------ faults
    def blackhole(self, direction: Direction = "both") -> Fault:
        """Drop every packet going ``direction``: a silent path (no FIN, no RST)."""
        return self._drop_rules("blackhole", direction, ("",), "every packet")

    def drop_data(self, direction: Direction = "upstream") -> Fault:
        """Drop the TCP segments that carry data going ``direction``; bare ACKs, FIN and
        RST pass. TCP keeps running both ways, so the *application's* bytes are lost one
        way only: with ``upstream``, the server's answer still arrives while it hears
        nothing from the client (the receive-only failure of issue 12, as
        ``FaultProxy.asymmetric("upstream")`` makes it).

        :meth:`blackhole` of one direction differs: it drops the ACKs too, so the other
        direction's TCP stalls once its congestion window is in flight. A data segment is
        one with PSH set (the last segment of every write) or longer than a bare ACK can
        be (80 bytes): every segment of a small frame, and every full-size one.
        """
        return self._drop_rules(
            "data",
            direction,
            (
                "meta l4proto tcp tcp flags & psh == psh ",
                f"meta l4proto tcp ip length > {_BARE_ACK_MAX} ",
            ),
            "TCP segments with data",
        )

    def loss(self, percent: float, direction: Direction = "both") -> Fault:
        """Drop ``percent`` % of the packets going ``direction``, at random
        (nft ``numgen random``; two decimals)."""
        if not 0 < percent <= 100:
            raise ValueError(f"loss percent must be in (0, 100], got {percent}")
        below = round(percent * _LOSS_SCALE / 100)
        match = f"numgen random mod {_LOSS_SCALE} < {below} "
        return self._drop_rules("loss", direction, (match,), f"{percent:g} % of packets")

    def bandwidth(
        self,
        rate_bit: int,
        direction: Direction = "downstream",
        *,
        burst: int | None = None,
        latency: float = 0.2,
    ) -> Fault:
        """Throttle ``direction`` to ``rate_bit`` bits/s with a ``tbf`` qdisc on the
        router's egress interface. ``burst`` (bytes) defaults to 10 ms at the rate, at
        least 2 full-size packets; ``latency`` is how long a packet may queue before tbf
        drops it. One shaper per direction: a second one replaces the first."""
        if rate_bit <= 0:
            raise ValueError(f"rate must be positive, got {rate_bit}")
        size = burst if burst is not None else max(rate_bit // 8 // 100, 3028)
        devices = self._egress(direction)
        for other in list(self.active):
            if other.kind == "bandwidth" and set(other._devices) & set(devices):
                other.remove()
        t0 = time.monotonic()
        for dev in devices:
            run(
                [
                    tool("tc"), "-n", self.router.name, "qdisc", "replace", "dev", dev, "root",
                    "tbf", "rate", f"{rate_bit}bit", "burst", str(size),
                    "latency", f"{max(1, round(latency * 1000))}ms",
                ]
            )  # fmt: skip
        fault = Fault(
            "bandwidth",
            direction,
            f"tbf {rate_bit} bit/s burst {size} B",
            t0,
            time.monotonic(),
            _owner=self,
            _devices=tuple(devices),
        )
        return self._added(fault)

    def reset(self, port: int, *, side: Side = "server") -> int:
        """Abort the established TCP connections of ``port`` with ``ss -K``: on the
        server (its sockets with that local port; the client gets an RST), on the client
        (its sockets with that remote port; the server gets an RST) or on both. Listening
        sockets are left alone. Returns how many sockets were aborted."""
        killed = 0
        targets = {"server": [self.server], "client": [self.client]}.get(
            side, [self.server, self.client]
        )
        for ns in targets:
            match = "sport" if ns is self.server else "dport"
            out = run(
                [tool("ss"), "-K", "-H", "-t", "-N", ns.name, "state", "established",
                 f"( {match} = :{port} )"]
            )  # fmt: skip
            killed += sum(1 for line in out.splitlines() if line.strip())
        return killed

    def heal(self) -> None:
        """Remove every fault (and anything else left in the router's chain or qdiscs)."""
        for fault in list(self.active):
            fault.remove()
        self._nft(f"flush chain inet {TABLE} {CHAIN}\n")
        for dev in (self.client_side, self.server_side):
            if self._qdisc(dev).get("kind") == "tbf":
                run([tool("tc"), "-n", self.router.name, "qdisc", "del", "dev", dev, "root"])

    # ------------------------------------------------------------ reading back
    def rules(self) -> list[dict[str, Any]]:
        """The router chain's rules, as ``nft -j`` gives them."""
        data = json.loads(self.router.run(tool("nft"), "-j", "list", "chain", "inet", TABLE, CHAIN))
        return [item["rule"] for item in data.get("nftables", []) if "rule" in item]

    def shapers(self) -> dict[str, dict[str, Any]]:
        """The tbf qdiscs on the router's interfaces, by interface."""
        out: dict[str, dict[str, Any]] = {}
        for dev in (self.client_side, self.server_side):
            q = self._qdisc(dev)
            if q.get("kind") == "tbf":
                out[dev] = q
        return out

    # ------------------------------------------------------------ internals
    def _links(self, direction: Direction) -> list[tuple[str, str]]:
        up = (self.client_side, self.server_side)
        down = (self.server_side, self.client_side)
        if direction == "upstream":
            return [up]
        if direction == "downstream":
            return [down]
        if direction == "both":
            return [up, down]
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")

    def _egress(self, direction: Direction) -> list[str]:
        return [oif for _, oif in self._links(direction)]

    def _drop_rules(
        self, kind: FaultKind, direction: Direction, matches: tuple[str, ...], detail: str
    ) -> Fault:
        """One rule per link and match (a packet matching any is dropped), in one
        nft transaction."""
        links = self._links(direction)
        script = "".join(
            f'add rule inet {TABLE} {CHAIN} iifname "{iif}" oifname "{oif}" '
            f'{match}counter drop comment "{kind} {direction}"\n'
            for iif, oif in links
            for match in matches
        )
        t0 = time.monotonic()
        out = self._nft(script, echo=True)
        t1 = time.monotonic()
        handles = tuple(int(m.group(1)) for line in out.splitlines() if (m := _HANDLE.search(line)))
        if len(handles) != len(links) * len(matches):
            raise KernelFaultError(["nft", "-e", "-a", "-f", "-"], 0, f"no handles in: {out}")
        return self._added(Fault(kind, direction, detail, t0, t1, _owner=self, _rules=handles))

    def _added(self, fault: Fault) -> Fault:
        self.active.append(fault)
        self.history.append(fault)
        return fault

    def _remove(self, fault: Fault) -> None:
        if fault._rules:
            self._nft(
                "".join(f"delete rule inet {TABLE} {CHAIN} handle {h}\n" for h in fault._rules)
            )
        for dev in fault._devices:
            if self._qdisc(dev).get("kind") == "tbf":
                run([tool("tc"), "-n", self.router.name, "qdisc", "del", "dev", dev, "root"])
        if fault in self.active:
            self.active.remove(fault)

    def _dropped_by(self, fault: Fault) -> int:
        total = 0
        if fault._rules:
            wanted = set(fault._rules)
            for rule in self.rules():
                if rule.get("handle") in wanted:
                    for expr in rule.get("expr", []):
                        if isinstance(expr, dict) and "counter" in expr:
                            total += int(expr["counter"]["packets"])
        for dev in fault._devices:
            total += int(self._qdisc(dev).get("drops", 0))
        return total

    def _qdisc(self, dev: str) -> dict[str, Any]:
        out = run([tool("tc"), "-j", "-s", "-n", self.router.name, "qdisc", "show", "dev", dev])
        items: list[dict[str, Any]] = json.loads(out or "[]")
        for q in items:
            if q.get("root"):
                return q
        return {}

    def _nft(self, script: str, *, echo: bool = False) -> str:
        flags = ["-e", "-a"] if echo else []
        return self.router.run(tool("nft"), *flags, "-f", "-", stdin=script)


__all__ = ["DIRECTIONS", "Direction", "Fault", "FaultKind", "RouterFaults", "Side"]
