"""Part roles: what a part *is* in an agent's answer (reasoning, a tool call, its result,
message metadata), carried as parameters of the part's mime type.

A role rides in ``part_start``'s ``mime`` (docs/reference/protocol.md §6.3), never in a
field of its own: the mime is covered by the digest chain, and clients that do not know
roles read it as an opaque string, so v1 and v2 clients of every age read the same
answer. Pure functions, no I/O::

    text/plain; role=reasoning
    application/json; role=tool-call; tool="get_weather"; call="call_Wx1"
    application/json; role=tool-result; tool="get_weather"; call="call_Wx1"
    application/json; role=metadata
    application/json; name="weather"          (a data component's name)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, cast

Role = Literal["", "reasoning", "tool-call", "tool-result", "metadata"]

#: The roles defined (``""``: a plain part). Unknown roles are read as ``""``.
ROLES: Final[frozenset[str]] = frozenset({"reasoning", "tool-call", "tool-result", "metadata"})
#: Older spellings still read: ``role=meta`` (the adapters' first metadata parts).
_ALIASES: Final = {"meta": "metadata"}
#: A parameter value longer than this is cut (a mime holds at most 4,096 characters).
MAX_PARAM: Final = 256

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def quote(value: str) -> str:
    """A mime parameter value as a quoted string (``"``, ``\\`` escaped; control
    characters, which a mime may not hold, replaced by ``_``; cut at :data:`MAX_PARAM`)."""
    value = _CONTROL.sub("_", value[:MAX_PARAM])
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def role_mime(base: str, role: Role = "", **params: str) -> str:
    """``base`` with a ``role`` parameter (when not empty) and the other parameters
    quoted, in order: ``role_mime("application/json", "tool-call", tool="f", call="c")``."""
    out = [base]
    if role:
        out.append(f"role={role}")
    out += [f"{k}={quote(v)}" for k, v in params.items()]
    return "; ".join(out)


def mime_params(mime: str) -> dict[str, str]:
    """The parameters of a mime type, names lowercased, quoted values unescaped
    (``application/json; tool="a;b"`` → ``{"tool": "a;b"}``). Never raises: a
    malformed parameter is skipped."""
    out: dict[str, str] = {}
    i = mime.find(";")
    n = len(mime)
    while 0 <= i < n:
        i += 1
        eq = mime.find("=", i)
        semi = mime.find(";", i)
        if eq < 0 or (0 <= semi < eq):  # a parameter without a value
            i = semi
            continue
        key = mime[i:eq].strip().lower()
        j = eq + 1
        while j < n and mime[j] == " ":
            j += 1
        if j < n and mime[j] == '"':
            buf: list[str] = []
            j += 1
            while j < n and mime[j] != '"':
                if mime[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(mime[j])
                j += 1
            value = "".join(buf)
            i = mime.find(";", j)
        else:
            end = mime.find(";", j)
            value = mime[j : n if end < 0 else end].strip()
            i = end
        if key:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class PartInfo:
    """What a part's ``part_start`` says it is.

    ``role``: ``reasoning``, ``tool-call``, ``tool-result``, ``metadata`` or ``""``.
    ``tool``, ``call``: a tool call's (or result's) tool name and call id. ``name``:
    a data component's name (``data-<name>`` in the AI SDK; the part id when unset).
    """

    role: Role = ""
    tool: str = ""
    call: str = ""
    name: str = ""


PLAIN: Final = PartInfo()


def part_info(part: str, kind: str, mime: str) -> PartInfo:
    """Read a part's role from its id, kind and mime (see the module doc).

    Also read: a JSON part with a ``tool`` parameter and no role is a tool call (the
    adapters' first form); a tool call or result without ``call`` takes its call id
    from a part id ``tool-<id>`` / ``result-<id>``.
    """
    if ";" not in mime:
        return PLAIN
    p = mime_params(mime)
    raw = p.get("role", "")
    role = _ALIASES.get(raw, raw)
    tool = p.get("tool", "")
    if not role and tool and kind == "json":
        role = "tool-call"
    if role not in ROLES:
        role = ""
    if role == "reasoning" and kind != "text":
        role = ""
    call = p.get("call", "")
    if role == "tool-call" and not call:
        call = _strip(part, "tool-")
    elif role == "tool-result" and not call:
        call = _strip(part, "result-")
    return PartInfo(cast(Role, role), tool, call, p.get("name", ""))


def _strip(part: str, prefix: str) -> str:
    return part[len(prefix) :] if part.startswith(prefix) and len(part) > len(prefix) else part
