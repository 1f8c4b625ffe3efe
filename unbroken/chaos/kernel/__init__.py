"""Kernel-level faults: real packet loss, silent paths and resets between two namespaces.

The userspace :class:`~unbroken.chaos.FaultProxy` terminates TCP on both sides; these
faults happen on the path, in the kernel, so TCP itself sees them (retransmissions,
RTO backoff, SYN loss, a peer that never hears the RST). Needs root; see
``docs/reference/kernel-faults.md``.

* :class:`Topology`: client, router and server namespaces joined by veth pairs
  (:mod:`.topology`); always torn down.
* :class:`RouterFaults` (``topology.faults``): blackhole (both ways or one), random loss
  (nft ``numgen``), bandwidth (``tbf``), reset (``ss -K``), heal (:mod:`.faults`).
* :class:`Namespace`: run, start or enter (``setns``) a namespace (:mod:`.namespace`).
* :func:`kernel_skip_reason`: why not here, in one sentence (:mod:`.support`).
* :mod:`.app`: ``unbroken serve unbroken.chaos.kernel.app:app``, a seeded answer agent.

::

    from unbroken.chaos.kernel import Topology, kernel_skip_reason

    with Topology() as topo:
        server = topo.server.start("unbroken", "serve", "unbroken.chaos.kernel.app:app",
                                   "--host", topo.addresses.server, "--port", "8000")
        server.wait_line(r"serving .* on ws://")
        with topo.client.entered():          # this thread's sockets: in the client ns
            ...                              # Client(topo.server_url(8000)) ...
            with topo.faults.blackhole("upstream"):   # receive-only failure
                ...
"""

from ...errors import KernelFaultError
from .faults import DIRECTIONS, Direction, Fault, FaultKind, RouterFaults, Side
from .namespace import Namespace, NamespacedProcess
from .support import TOOLS, KernelSupport, kernel_skip_reason, kernel_support
from .topology import Addresses, Topology, list_namespaces, remove_stale

__all__ = [
    "DIRECTIONS",
    "TOOLS",
    "Addresses",
    "Direction",
    "Fault",
    "FaultKind",
    "KernelFaultError",
    "KernelSupport",
    "Namespace",
    "NamespacedProcess",
    "RouterFaults",
    "Side",
    "Topology",
    "kernel_skip_reason",
    "kernel_support",
    "list_namespaces",
    "remove_stale",
]
