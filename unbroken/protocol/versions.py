"""Protocol versions: which ones exist, which a side speaks, and the choice per connection.

A version is named ``"v1"``, ``"v2"``; on the wire it is the WebSocket subprotocol
``unbroken.v1``, ``unbroken.v2``. The client offers the versions it speaks, newest
first; the server picks the newest one it speaks that the client offered (a client
that offers no subprotocol is an old v1 client). No common version: the server
closes with 4005 and a reason listing the versions it speaks
(:func:`refusal_reason`), which the client turns into
:class:`~unbroken.errors.UnsupportedVersion` (:func:`unsupported`).

The events, their digest chain and the stored log are the same whatever the version:
only the framing differs (docs/reference/protocol.md §19).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from ..errors import ConfigError, UnsupportedVersion

#: Every version this implementation can speak, newest first.
KNOWN: Final[tuple[str, ...]] = ("v2", "v1")
#: What a server and a client speak unless told otherwise.
DEFAULT: Final[tuple[str, ...]] = KNOWN
_PREFIX: Final = "unbroken."


def subprotocol(version: str) -> str:
    """The WebSocket subprotocol of ``version`` (``"v1"`` → ``"unbroken.v1"``)."""
    return _PREFIX + version


def normalize(versions: str | Iterable[str]) -> tuple[str, ...]:
    """``versions`` as a tuple of known version names, newest first, without repeats.

    Takes names (``"v1"``), subprotocols (``"unbroken.v1"``) or one comma-separated
    string (``"v1,v2"``, as ``--protocols`` gives it). Raises
    :class:`~unbroken.errors.ConfigError` for an unknown name or an empty list.
    """
    items = versions.split(",") if isinstance(versions, str) else list(versions)
    chosen: set[str] = set()
    for item in items:
        name = str(item).strip()
        if name.startswith(_PREFIX):
            name = name[len(_PREFIX) :]
        if not name:
            continue
        if name not in KNOWN:
            raise ConfigError(
                f"unknown protocol version {name!r}; known: {', '.join(sorted(KNOWN))}"
            )
        chosen.add(name)
    if not chosen:
        raise ConfigError(f"give at least one protocol version ({', '.join(sorted(KNOWN))})")
    return tuple(v for v in KNOWN if v in chosen)


def offered(versions: Sequence[str]) -> list[str]:
    """The subprotocols a client offers for ``versions`` (newest first)."""
    return [subprotocol(v) for v in versions]


def negotiate(offered_subprotocols: Sequence[str], spoken: Sequence[str]) -> str | None:
    """The version a server speaking ``spoken`` picks for a client that offered
    ``offered_subprotocols``: the newest both speak. A client that offers nothing
    is an old v1 client. ``None``: no common version (close 4005)."""
    if not offered_subprotocols:
        return "v1" if "v1" in spoken else None
    for version in KNOWN:
        if version in spoken and subprotocol(version) in offered_subprotocols:
            return version
    return None


def chosen_version(subprotocol_header: str | None) -> str | None:
    """The version a server chose, from its ``Sec-WebSocket-Protocol`` answer
    (none: a server that predates negotiation speaks v1). ``None``: not a version."""
    if subprotocol_header is None:
        return "v1"
    name = subprotocol_header[len(_PREFIX) :] if subprotocol_header.startswith(_PREFIX) else ""
    return name if name in KNOWN else None


def refusal_reason(spoken: Sequence[str]) -> str:
    """The 4005 close reason: says which versions the server speaks
    (``"no common protocol version; server speaks v2,v1"``)."""
    return f"no common protocol version; server speaks {','.join(spoken)}"


_SPEAKS = re.compile(r"server speaks ([A-Za-z0-9.,]+)")


def server_versions(reason: str) -> tuple[str, ...]:
    """The versions a 4005 close reason lists (``()`` when it lists none: an older
    server's reason, ``"supported subprotocols: unbroken.v1"``, gives ``("v1",)``)."""
    m = _SPEAKS.search(reason)
    if m is None:
        return tuple(re.findall(r"unbroken\.(v\d+)", reason))
    names = [n.strip() for n in m.group(1).split(",")]
    return tuple(n[len(_PREFIX) :] if n.startswith(_PREFIX) else n for n in names if n)


def unsupported(client: Sequence[str], reason: str) -> UnsupportedVersion:
    """The error a client raises on close 4005 with ``reason``."""
    return UnsupportedVersion(tuple(client), server_versions(reason), reason)
