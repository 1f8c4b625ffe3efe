"""Which web pages may open a WebSocket to the app, and read its HTTP answers (CORS).

A browser sends the ``Origin`` of the page that opens a WebSocket, and sends the
user's cookies for the *target* site whatever page asks. Without a check, a page on
``https://evil.example`` can open a WebSocket to your server with your user's
cookies and read their streams: cross-site WebSocket hijacking. The check is here.

:class:`OriginPolicy` is one immutable snapshot of the rules:

- **Safe default** (``allow_same_host=True``, nothing else allowed): a handshake
  whose ``Origin`` names the same *hostname* as its ``Host`` header is accepted,
  any other ``Origin`` is refused (the idea of Django Channels'
  ``AllowedHostsOriginValidator``). Hostnames, not ports: cookies are not scoped by
  port, so a page on another port of the same host gains nothing by it.
- **No** ``Origin`` (a non-browser client: the Python client, curl, a server) is
  accepted: the header is how browsers say who is asking, and only browsers carry
  a user's ambient credentials. ``Origin: null`` (sandboxed iframes, ``file:``
  pages, some redirects) is refused unless ``"null"`` is in the allowlist.
- ``allowed_origins``: exact origins (``https://app.example.com``, the port is part
  of it: ``http://localhost:5173``) and wildcard subdomains
  (``https://*.example.com``: ``a.example.com`` and ``a.b.example.com``, not
  ``example.com`` itself, not ``example.com.evil.net``, not ``evil-example.com``).
- ``allow_any_origin=True``: any page may connect (an explicit opt-in, for apps
  that authenticate with a token in ``hello`` and never with cookies).

The same rules drive CORS on the app's HTTP endpoints (``/healthz``): an allowed
``Origin`` is echoed in ``Access-Control-Allow-Origin`` with ``Vary: Origin``.

:class:`LivePolicy` holds the current snapshot of an app (``app.policy``) and swaps
it atomically: :meth:`LivePolicy.update` from code, :meth:`LivePolicy.reload` from a
TOML file (``unbroken serve --policy policy.toml`` does it on SIGHUP and when the
file changes). A new handshake is judged by the snapshot current at that moment;
open connections are never judged again, so a change never cuts a stream; a
client that reconnects (a resume after a drop) makes a new handshake, judged by the
policy then in force.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..errors import ConfigError
from ..protocol.frames import excerpt

log = logging.getLogger(__name__)

#: The ports an origin leaves out when it uses its scheme's default.
DEFAULT_PORTS: Final[Mapping[str, int]] = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Longest ``Origin`` or ``Host`` value looked at (longer ones are refused as malformed).
MAX_HEADER = 1024
#: How much of a peer's ``Origin`` a log line quotes.
LOG_ORIGIN = 120

_Origin = tuple[str, str, int | None]  # scheme, hostname, port (None: no default known)


def _split_host(hostport: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` too) -> (lower-case host, port); None if malformed."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return None
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = hostport.partition(":")
        port_text = port_text_ if sep else None
        if ":" in port_text_:
            return None
    if port_text is not None and not (port_text.isascii() and port_text.isdigit()):
        return None
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        return None
    host = host.lower().rstrip(".")
    if not host or not host.isascii() or any(c in host for c in "/\\@?#%, \t"):
        return None
    return host, port


def parse_origin(value: str) -> _Origin | None:
    """An ``Origin`` value (``scheme://host[:port]``, nothing after) -> (scheme, host,
    port with the scheme's default filled in); None if it is not one."""
    if len(value) > MAX_HEADER:
        return None
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme or not scheme.isascii() or not scheme.replace("-", "").isalnum():
        return None
    if not rest or any(c in rest for c in "/?#@"):
        return None
    split = _split_host(rest)
    if split is None:
        return None
    host, port = split
    return scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme)


def host_name(host_header: str | None) -> str | None:
    """The hostname of a ``Host`` header (lower case, without the port), or None."""
    if not host_header or len(host_header) > MAX_HEADER:
        return None
    split = _split_host(host_header.strip())
    return split[0] if split is not None else None


@dataclass(frozen=True, slots=True)
class OriginDecision:
    """Whether a handshake or CORS request from an ``Origin`` is allowed, and why."""

    allowed: bool
    #: one short phrase for the log: ``same host``, ``allowlisted https://*.example.com``,
    #: ``origin not allowed`` …
    reason: str


_NO_ORIGIN = OriginDecision(True, "no Origin header (not a browser)")
_ANY = OriginDecision(True, "allow_any_origin")
_SAME_HOST = OriginDecision(True, "same host")
_NOT_ALLOWED = OriginDecision(False, "origin not allowed")
_MALFORMED = OriginDecision(False, "malformed Origin header")
_NULL = OriginDecision(False, "Origin null not allowed")


def _pattern(entry: str) -> tuple[str, _Origin]:
    """One allowlist entry -> ("exact" | "wildcard" | "null", its parts); ConfigError
    with the reason when it is not an origin or a wildcard origin."""
    if entry == "null":
        return "null", ("", "", None)
    if entry.strip() == "*":
        raise ConfigError(
            "allowed_origins: '*' is not an origin; set allow_any_origin=True to let any "
            "page connect (only safe when nothing authenticates with cookies)"
        )
    wildcard = "://*." in entry
    parsed = parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
    if parsed is None or "*" in parsed[1]:
        raise ConfigError(
            f"allowed_origins: {entry!r} is not an origin (scheme://host[:port], no path, "
            "e.g. https://app.example.com; IDN hosts as punycode, xn--…) nor a wildcard "
            "subdomain (https://*.example.com)"
        )
    if parsed[2] is None:
        raise ConfigError(f"allowed_origins: {entry!r}: give the port (scheme has no default)")
    return ("wildcard" if wildcard else "exact"), parsed


def _strings(value: Iterable[str] | str, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"{what}: give a list of strings, not one string ({value!r})")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{what}: every item must be a string, got {item!r}")
    return items


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """One immutable snapshot of the origin and CORS rules (see the module doc).

    >>> p = OriginPolicy(allowed_origins=("https://*.example.com",))
    >>> p.check("https://app.example.com", "api.internal").allowed
    True
    >>> p.check("https://example.com.evil.net", "api.internal").allowed
    False
    """

    #: exact origins (``https://app.example.com``), wildcard subdomains
    #: (``https://*.example.com``) and ``"null"``
    allowed_origins: tuple[str, ...] = ()
    #: any ``Origin`` is allowed (explicit opt-in; see the module doc)
    allow_any_origin: bool = False
    #: an ``Origin`` whose hostname is the ``Host`` header's is allowed (the safe default)
    allow_same_host: bool = True
    #: request headers a CORS preflight may ask for (case-insensitive; ``"*"``: any)
    cors_allow_headers: tuple[str, ...] = ()
    #: answer CORS requests with ``Access-Control-Allow-Credentials: true``
    cors_allow_credentials: bool = False
    #: seconds a browser may cache a preflight answer
    cors_max_age: int = 600

    _exact: frozenset[_Origin] = field(init=False, repr=False, compare=False)
    _wild: tuple[_Origin, ...] = field(init=False, repr=False, compare=False)
    _null: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        origins = _strings(self.allowed_origins, "allowed_origins")
        headers = tuple(h.lower() for h in _strings(self.cors_allow_headers, "cors_allow_headers"))
        object.__setattr__(self, "allowed_origins", origins)
        object.__setattr__(self, "cors_allow_headers", headers)
        for name in ("allow_any_origin", "allow_same_host", "cors_allow_credentials"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.cors_max_age, bool) or not isinstance(self.cors_max_age, int):
            raise ConfigError(f"cors_max_age must be an integer, got {self.cors_max_age!r}")
        if self.cors_max_age < 0:
            raise ConfigError("cors_max_age must not be negative")
        exact: set[_Origin] = set()
        wild: list[_Origin] = []
        null = False
        for entry in origins:
            kind, parts = _pattern(entry)
            if kind == "null":
                null = True
            elif kind == "wildcard":
                wild.append(parts)
            else:
                exact.add(parts)
        object.__setattr__(self, "_exact", frozenset(exact))
        object.__setattr__(self, "_wild", tuple(wild))
        object.__setattr__(self, "_null", null)

    def check(self, origin: str | None, host: str | None) -> OriginDecision:
        """May a request with ``Origin: origin`` sent to ``Host: host`` go on?
        (``None``: the header was absent.)"""
        if origin is None:
            return _NO_ORIGIN
        if self.allow_any_origin:
            return _ANY
        if origin == "null":
            return OriginDecision(True, "allowlisted null") if self._null else _NULL
        parsed = parse_origin(origin)
        if parsed is None:
            return _MALFORMED
        if parsed in self._exact:
            return OriginDecision(True, "allowlisted")
        scheme, hostname, port = parsed
        for w_scheme, suffix, w_port in self._wild:
            if (
                scheme == w_scheme
                and port == w_port
                and hostname.endswith("." + suffix)
                and len(hostname) > len(suffix) + 1
            ):
                return OriginDecision(True, f"allowlisted {_show(w_scheme, '*.' + suffix, w_port)}")
        if self.allow_same_host and hostname == host_name(host):
            return _SAME_HOST
        return _NOT_ALLOWED

    def describe(self) -> str:
        """One line for the log: what is allowed."""
        if self.allow_any_origin:
            return "any origin"
        shown = list(self.allowed_origins)
        if self.allow_same_host:
            shown.insert(0, "same host")
        return ", ".join(shown) if shown else "no browser origin"

    # ------------------------------------------------------------ from TOML
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> OriginPolicy:
        """A policy from the TOML layout (``[origins]`` and ``[cors]``, see
        docs/how-to/origin-policy.md); :class:`ConfigError` names what is wrong."""
        sections: dict[str, dict[str, str]] = {
            "origins": {
                "allow": "allowed_origins",
                "allow_any": "allow_any_origin",
                "same_host": "allow_same_host",
            },
            "cors": {
                "allow_headers": "cors_allow_headers",
                "allow_credentials": "cors_allow_credentials",
                "max_age": "cors_max_age",
            },
        }
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}: expected [origins] and [cors]")
        kwargs: dict[str, Any] = {}
        for name, keys in sections.items():
            table = data.get(name, {})
            if not isinstance(table, Mapping):
                raise ConfigError(f"[{name}] must be a table")
            extra = sorted(set(table) - set(keys))
            if extra:
                raise ConfigError(f"[{name}]: unknown key(s) {extra}; known: {sorted(keys)}")
            for key, attr in keys.items():
                if key in table:
                    kwargs[attr] = table[key]
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> OriginPolicy:
        """Read a policy file; :class:`ConfigError` (with the file name) if it is bad."""
        import tomllib  # here: a server without a policy file does not hold the parser

        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
            return cls.from_mapping(data)
        except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
            raise ConfigError(f"policy file {os.fspath(path)}: {exc}") from None


def _show(scheme: str, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        shown += f":{port}"
    return f"{scheme}://{shown}"


class LivePolicy:
    """An app's current :class:`OriginPolicy` (``app.policy``), swapped atomically.

    Readers take :attr:`current` once per handshake or request (one attribute
    read; the snapshot never changes under them). Writers (:meth:`update`,
    :meth:`set`, :meth:`reload`) build a new snapshot, validate it, and swap it in
    under a lock; a bad one raises :class:`ConfigError` (or, for
    :meth:`reload`, is logged) and the old policy stays. Safe to call from another
    thread than the server's.
    """

    __slots__ = ("_current", "_lock", "source", "version")

    def __init__(
        self, policy: OriginPolicy | None = None, *, source: str | os.PathLike[str] | None = None
    ) -> None:
        self._current = policy if policy is not None else OriginPolicy()
        self._lock = threading.Lock()
        #: bumped by every change (1: the policy the app started with)
        self.version = 1
        #: the file :meth:`reload` reads when given none (``unbroken serve --policy``)
        self.source: Path | None = Path(source) if source is not None else None

    @property
    def current(self) -> OriginPolicy:
        """The snapshot in force now."""
        return self._current

    def set(self, policy: OriginPolicy, *, why: str = "set") -> OriginPolicy:
        """Put ``policy`` in force for every new handshake and request from now on."""
        if not isinstance(policy, OriginPolicy):
            raise ConfigError(f"expected an OriginPolicy, got {type(policy).__name__}")
        with self._lock:
            self._current = policy
            self.version += 1
            version = self.version
        log.info("origin policy %s version=%d allows=%s", why, version, excerpt(policy.describe()))
        return policy

    def update(self, policy: OriginPolicy | None = None, /, **changes: Any) -> OriginPolicy:
        """Put a new policy in force: ``policy`` as given, or the current one with
        ``changes`` (the :class:`OriginPolicy` field names, e.g.
        ``app.policy.update(allowed_origins=["https://b.example"])``). Open
        connections are not affected; new handshakes use it at once."""
        if policy is not None and changes:
            raise ConfigError("pass a whole OriginPolicy or field changes, not both")
        if policy is not None:
            return self.set(policy, why="updated")
        with self._lock:
            try:
                new = dataclasses.replace(self._current, **changes)
            except TypeError as exc:
                names = [f.name for f in dataclasses.fields(OriginPolicy) if f.init]
                raise ConfigError(f"OriginPolicy: {exc}; known fields: {names}") from None
            self._current = new
            self.version += 1
            version = self.version
        log.info("origin policy updated version=%d allows=%s", version, excerpt(new.describe()))
        return new

    def reload(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Read the policy file (``path``, else :attr:`source`) and put it in force.
        A file that cannot be read or is invalid changes nothing: the old policy
        stays, the reason is logged, and False is returned."""
        source = Path(path) if path is not None else self.source
        if source is None:
            raise ConfigError("no policy file to reload: pass a path or set source")
        try:
            policy = OriginPolicy.from_toml(source)
        except ConfigError as exc:
            log.error(
                "origin policy reload failed version=%d (kept): %s", self.version, excerpt(str(exc))
            )
            return False
        self.set(policy, why=f"reloaded from {excerpt(str(source), 200)}")
        return True

    def check_handshake(
        self, origin: str | None, host: str | None, client: str = ""
    ) -> OriginDecision:
        """Judge a WebSocket handshake by the policy in force, and log the decision
        when the request came from a page (an ``Origin`` header): accepted at INFO,
        refused at WARNING, with the reason and the quoted, bounded Origin."""
        decision = self._current.check(origin, host)
        if origin is not None:
            if decision.allowed:
                log.info(
                    "origin accepted client=%s origin=%r reason=%s",
                    client,
                    excerpt(origin, LOG_ORIGIN),
                    decision.reason,
                )
            else:
                log.warning(
                    "origin refused client=%s origin=%r host=%r reason=%s policy=%d status=403",
                    client,
                    excerpt(origin, LOG_ORIGIN),
                    excerpt(host or "", LOG_ORIGIN),
                    decision.reason,
                    self.version,
                )
        return decision


__all__ = [
    "DEFAULT_PORTS",
    "LivePolicy",
    "OriginDecision",
    "OriginPolicy",
    "host_name",
    "parse_origin",
]
