"""Three network namespaces, a client and a server joined through a router::

    client ns                    router ns                     server ns
    ub-c 198.18.0.2/24 ── veth ── ub-rc 198.18.0.1   ub-rs 198.18.1.1 ── veth ── ub-s 198.18.1.2/24
                                 (forwarding; nft table inet unbroken, chain forward;
                                  tbf on ub-rc for downstream, on ub-rs for upstream)

The addresses are from 198.18.0.0/15, the range set aside for network benchmarks
(RFC 2544); they exist only inside these namespaces, which have no route anywhere else.
Segmentation and receive offloads are turned off on every veth end, so a dropped packet
is one TCP segment, as on a real link, not a 64 KB super-packet.

:class:`Topology` is a context manager (sync or async): it makes everything under unique
names and always deletes it on exit, even when setup or the block fails. Names carry the
creating process's pid, so :func:`remove_stale` can delete what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from types import TracebackType

from ...errors import KernelFaultError
from .faults import RouterFaults
from .namespace import Namespace
from .support import kernel_support, run, tool

PREFIX = "ubk"
CLIENT_IF, ROUTER_CLIENT_IF, ROUTER_SERVER_IF, SERVER_IF = "ub-c", "ub-rc", "ub-rs", "ub-s"
_NAME = re.compile(rf"^{PREFIX}(\d+)x[0-9a-f]+-[crs]$")
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class Addresses:
    """The topology's IPv4 addresses (all on /``prefix`` networks)."""

    client: str = "198.18.0.2"
    client_gateway: str = "198.18.0.1"
    server: str = "198.18.1.2"
    server_gateway: str = "198.18.1.1"
    prefix: int = 24


class Topology:
    """A client and a server namespace joined through a router namespace.

    ``topology.client``, ``.router`` and ``.server`` are :class:`Namespace` s;
    ``topology.faults`` breaks the path (:class:`RouterFaults`). ``offloads=False``
    (default) turns TSO/GSO/GRO off on every veth end.
    """

    def __init__(self, *, addresses: Addresses | None = None, offloads: bool = False) -> None:
        self.addresses = addresses or Addresses()
        self.offloads = offloads
        tag = f"{PREFIX}{os.getpid()}x{next(_counter):x}{secrets.token_hex(2)}"
        self.tag = tag
        self.client = Namespace(f"{tag}-c")
        self.router = Namespace(f"{tag}-r")
        self.server = Namespace(f"{tag}-s")
        self.faults = RouterFaults(
            self.router,
            self.client,
            self.server,
            client_side=ROUTER_CLIENT_IF,
            server_side=ROUTER_SERVER_IF,
        )
        self._made: list[Namespace] = []
        self.opened = False

    @property
    def namespaces(self) -> tuple[Namespace, Namespace, Namespace]:
        return (self.client, self.router, self.server)

    def server_url(self, port: int, path: str = "/ws") -> str:
        """``ws://SERVER:port/path``: the server as the client namespace reaches it."""
        return f"ws://{self.addresses.server}:{port}{path}"

    # ------------------------------------------------------------ lifecycle
    def open(self) -> Topology:
        """Build the namespaces, links, routes and the router's nft table."""
        reason = kernel_support().skip_reason
        if reason is not None:
            raise KernelFaultError(["netns"], 1, reason)
        remove_stale()
        a, ip = self.addresses, tool("ip")
        try:
            for ns in self.namespaces:
                run([ip, "netns", "add", ns.name])
                self._made.append(ns)
            c, r, s = self.client, self.router, self.server
            c.ip("link", "add", CLIENT_IF, "type", "veth", "peer", "name", ROUTER_CLIENT_IF,
                 "netns", r.name)  # fmt: skip
            s.ip("link", "add", SERVER_IF, "type", "veth", "peer", "name", ROUTER_SERVER_IF,
                 "netns", r.name)  # fmt: skip
            c.ip("addr", "add", f"{a.client}/{a.prefix}", "dev", CLIENT_IF)
            r.ip("addr", "add", f"{a.client_gateway}/{a.prefix}", "dev", ROUTER_CLIENT_IF)
            r.ip("addr", "add", f"{a.server_gateway}/{a.prefix}", "dev", ROUTER_SERVER_IF)
            s.ip("addr", "add", f"{a.server}/{a.prefix}", "dev", SERVER_IF)
            for ns, devs in (
                (c, [CLIENT_IF]),
                (r, [ROUTER_CLIENT_IF, ROUTER_SERVER_IF]),
                (s, [SERVER_IF]),
            ):
                for dev in ["lo", *devs]:
                    ns.ip("link", "set", dev, "up")
                if not self.offloads:
                    for dev in devs:
                        ns.run(tool("ethtool"), "-K", dev, "tso", "off", "gso", "off", "gro", "off")
            c.ip("route", "add", "default", "via", a.client_gateway)
            s.ip("route", "add", "default", "via", a.server_gateway)
            r.sysctl("net.ipv4.ip_forward", "1")
            self.faults.install_table()
        except BaseException:
            self.close()
            raise
        self.opened = True
        return self

    def close(self) -> None:
        """Stop processes started in the namespaces and delete the namespaces (their
        veths, rules and qdiscs go with them). Safe to call twice."""
        for ns in self.namespaces:
            ns.stop_processes()
        for ns in reversed(self._made):
            subprocess.run([tool("ip"), "netns", "del", ns.name], capture_output=True, check=False)
        self._made.clear()
        self.faults.active.clear()
        self.opened = False

    def exists(self) -> bool:
        """Whether any of this topology's namespaces is still there."""
        listed = set(list_namespaces())
        return any(ns.name in listed for ns in self.namespaces)

    def __enter__(self) -> Topology:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Topology:
        return self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def list_namespaces() -> list[str]:
    """The names of every named network namespace (``ip netns list``)."""
    out = run([tool("ip"), "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_stale() -> list[str]:
    """Delete the namespaces of topologies whose process is gone (a killed test run);
    the names deleted."""
    removed: list[str] = []
    for name in list_namespaces():
        m = _NAME.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            with contextlib.suppress(KernelFaultError):
                run([tool("ip"), "netns", "del", name])
                removed.append(name)
    return removed


__all__ = [
    "CLIENT_IF",
    "PREFIX",
    "ROUTER_CLIENT_IF",
    "ROUTER_SERVER_IF",
    "SERVER_IF",
    "Addresses",
    "Topology",
    "list_namespaces",
    "remove_stale",
]
