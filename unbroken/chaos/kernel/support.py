"""What kernel-level faults need, and whether this machine has it.

Network namespaces, veth pairs, nft rules, tbf qdiscs and ``ss -K`` need root (the
``CAP_NET_ADMIN`` and ``CAP_SYS_ADMIN`` capabilities) and five tools from Debian's
``iproute2``, ``nftables`` and ``ethtool`` packages. :func:`kernel_support` probes once
per process (it creates and deletes one namespace) and :func:`kernel_skip_reason` says in
one sentence why the faults cannot run here, or ``None`` when they can.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import KernelFaultError

#: The tools used, and the Debian package of each.
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ss": "iproute2",
    "nft": "nftables",
    "ethtool": "ethtool",
}

# root's usual PATH has the sbin directories; a trimmed environment may not
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


def tool(name: str) -> str:
    """The absolute path of ``name`` (one of :data:`TOOLS`), or the bare name if not found
    (running it then fails with a clear error)."""
    return shutil.which(name, path=_SEARCH_PATH) or name


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 15.0) -> str:
    """Run a command to completion; its stdout, or :class:`KernelFaultError` with its
    output if it fails."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise KernelFaultError(argv, 127, f"not found: {exc.filename}") from None
    except subprocess.TimeoutExpired:
        raise KernelFaultError(argv, -1, f"no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        raise KernelFaultError(argv, done.returncode, done.stderr or done.stdout)
    return done.stdout


@dataclass(frozen=True, slots=True)
class KernelSupport:
    """What this machine offers for kernel-level faults.

    ``root``: running as uid 0. ``missing``: tools of :data:`TOOLS` not found.
    ``netns``: a network namespace could be created (``netns_error`` says why not).
    ``netem``: the ``netem`` qdisc exists (delay, jitter, reorder); many VM kernels lack it,
    and nothing here needs it.
    """

    root: bool
    missing: tuple[str, ...]
    netns: bool
    netns_error: str = ""
    netem: bool = False

    @property
    def usable(self) -> bool:
        return self.skip_reason is None

    @property
    def skip_reason(self) -> str | None:
        """One sentence: why kernel-level faults cannot run here; ``None`` if they can."""
        if not self.root:
            return "kernel-level faults need root (network namespaces, nft, tc): run as root"
        if self.missing:
            packages = sorted({TOOLS[t] for t in self.missing})
            return (
                f"kernel-level faults need {', '.join(self.missing)}: "
                f"apt-get install {' '.join(packages)}"
            )
        if not self.netns:
            return f"cannot create a network namespace here: {self.netns_error}"
        return None


def support_of(*, root: bool, missing: Sequence[str], netns_error: str | None) -> KernelSupport:
    """A :class:`KernelSupport` from the facts probed (pure: used by :func:`kernel_support`)."""
    return KernelSupport(
        root=root,
        missing=tuple(missing),
        netns=netns_error is None and root and not missing,
        netns_error=netns_error or "",
    )


@functools.cache
def kernel_support() -> KernelSupport:
    """Probe this machine once: root, tools, a namespace and the netem qdisc."""
    root = os.geteuid() == 0
    missing = [name for name in TOOLS if shutil.which(name, path=_SEARCH_PATH) is None]
    if not root or missing:
        return support_of(root=root, missing=missing, netns_error="not probed")
    name = f"ubkprobe{os.getpid()}"
    ip = tool("ip")
    try:
        run([ip, "netns", "add", name])
    except KernelFaultError as exc:
        return support_of(root=root, missing=(), netns_error=exc.output.strip() or str(exc))
    try:
        run([ip, "-n", name, "link", "set", "lo", "up"])
        try:
            run(
                [
                    tool("tc"),
                    "-n",
                    name,
                    "qdisc",
                    "add",
                    "dev",
                    "lo",
                    "root",
                    "netem",
                    "limit",
                    "10",
                ]
            )
            netem = True
        except KernelFaultError:
            netem = False
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
    return KernelSupport(root=True, missing=(), netns=True, netem=netem)


def kernel_skip_reason() -> str | None:
    """Why kernel-level faults cannot run on this machine (for ``pytest.skip``), or None."""
    return kernel_support().skip_reason
