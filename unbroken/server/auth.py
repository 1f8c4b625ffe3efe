"""JWT verification built in: :class:`JWTAuth`, an ``authenticate`` hook.

``Unbroken(auth=JWTAuth(jwks_url="https://idp.example/.well-known/jwks.json",
algorithms=["RS256"], audience="api", issuer="https://idp.example/"))`` checks the
``hello`` token (and every in-band ``refresh``) with PyJWT:

- the algorithms are the server's, never the token's: a token whose header names
  another (``none``, or ``HS256`` signed with an RSA public key as the secret) is
  refused; keys are typed objects (an HMAC secret only for ``HS*``, a public key
  for the others, never both in one :class:`JWTAuth`);
- ``exp`` is required, and ``exp``, ``nbf``, ``aud``, ``iss`` are checked (with
  ``leeway`` seconds of clock skew);
- the principal is the ``sub`` claim (or ``principal_claim``); its ``expires`` is
  ``exp + leeway``, so the connection warns the client (``auth_expiring``) and closes
  with 4010 when the token runs out unless the client refreshed it in-band.

With ``jwks_url`` the keys come from a JSON Web Key Set (:class:`JWKSCache`): fetched
off the event loop (a thread), one fetch at a time, kept ``jwks_ttl`` seconds; a
token naming a key id the cache does not hold triggers one fetch (key rotation),
at most one every ``jwks_min_interval`` seconds (a flood of made-up ``kid`` values
cannot make the server hammer the identity provider). When the set cannot be
fetched the keys already held stay in use.

A refused token raises :class:`~unbroken.errors.AuthError` with a message that
says what to fix (never the token itself): the connection closes with 4002, a
refused ``refresh`` is answered ``error`` ``auth_failed``. A JWKS that cannot be
reached for a key the cache lacks raises :class:`~unbroken.errors.JWKSUnavailable`
(close 1011: the client retries, the token may be fine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from ..errors import AuthError, ConfigError, JWKSUnavailable
from ..protocol.frames import Hello, excerpt
from .agent import Principal

log = logging.getLogger(__name__)

#: Algorithms JWTAuth accepts to pin (PyJWT names); ``none`` is never one of them.
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES256K",
        "ES384",
        "ES512",
        "EdDSA",
    }
)
#: Largest JWKS document read (bytes).
MAX_JWKS_BYTES: Final = 1024 * 1024

#: What a key may be given as: an HMAC secret (``str``/``bytes``, ``HS*`` only), a PEM
#: text (``str``/``bytes`` starting ``-----BEGIN``), a JWK (a mapping), or a key object
#: of ``cryptography`` (a private key stands for its public key).
KeyLike = str | bytes | Mapping[str, object] | PublicKeyTypes | PrivateKeyTypes

# The connection (which this module must not import) only needs an object with
# these fields; typed loosely here to avoid the import.
ConnectInfoLike = Any


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JWKSCache:
    """The keys of a JSON Web Key Set, by key id, fetched off the event loop.

    :meth:`key` returns the key for a ``kid``: from the cache while it is younger
    than ``ttl``; else (or for a ``kid`` it does not hold) after one fetch, shared by
    every caller waiting at that moment, and never sooner than ``min_interval``
    after the previous fetch. A failed fetch keeps the keys held. ``fetches``
    counts the fetches made (for tests and metrics).
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: Sequence[str],
        ttl: float = 300.0,
        min_interval: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"jwks_url must be an http(s) URL, not {excerpt(url, 80)!r}")
        if ttl <= 0 or min_interval < 0 or timeout <= 0:
            raise ConfigError("jwks_ttl and the timeout must be positive, min_interval >= 0")
        self.url = url
        self.algorithms = tuple(algorithms)
        self.ttl = ttl
        self.min_interval = min_interval
        self.timeout = timeout
        self.fetches = 0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # monotonic time of the last good fetch
        self._tried_at: float | None = None  # monotonic time of the last attempt
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""

    @property
    def kids(self) -> list[str]:
        """The key ids held now."""
        return list(self._keys)

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key ``kid`` names (``None``: the one key the set holds for ``alg``).
        Raises :class:`AuthError` when there is none, :class:`JWKSUnavailable` when
        the set could not be fetched and no key is held."""
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at >= self.ttl
        if stale or (kid is not None and kid not in self._keys and self._may_fetch(now)):
            await self._refresh(now)
        if not self._keys and self._last_error:
            raise JWKSUnavailable(f"could not fetch the JWKS ({self._last_error}); retry shortly")
        if kid is None:
            fits = [k for k in self._keys.values() if _fits(k, alg)]
            if len(fits) == 1:
                return fits[0]
            raise AuthError(
                f"token has no kid header and the JWKS holds {len(fits)} keys for {alg}; "
                "issue tokens with a kid"
            )
        found = self._keys.get(kid)
        if found is None:
            raise AuthError(
                f"token key id {excerpt(kid, 40)!r} is not in the server's JWKS; "
                "get a token signed with a current key"
            )
        if not _fits(found, alg):
            raise AuthError(f"token algorithm {alg} does not match its key {excerpt(kid, 40)!r}")
        return found

    def _may_fetch(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self.min_interval

    async def _refresh(self, now: float) -> None:
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            if not self._may_fetch(now):
                return  # tried a moment ago (even if it failed): what is held is the answer
            self._tried_at = now
            task = self._task = asyncio.get_running_loop().create_task(self._fetch())
        await asyncio.shield(task)

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            document = await asyncio.to_thread(_get_json, self.url, self.timeout)
            keys = _parse_jwks(document, self.algorithms)
        except Exception as exc:  # network, HTTP, JSON: keep what is held
            self._last_error = excerpt(f"{type(exc).__name__}: {exc}", 120)
            log.warning("jwks fetch failed url=%s error=%s", self.url, self._last_error)
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._last_error = ""
        log.info("jwks fetched url=%s kids=%s", self.url, ",".join(keys) or "-")


def _get_json(url: str, timeout: float) -> object:
    """GET ``url`` (in a thread: this blocks) and parse its JSON body."""
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "unbroken-jwks"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # http(s) only (checked)
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
    return json.loads(body)


def _parse_jwks(document: object, algorithms: Sequence[str]) -> dict[str, jwt.PyJWK]:
    """The usable keys of a JWKS document by ``kid`` (keys without a ``kid``, for
    another use than signatures, or of a type no pinned algorithm verifies are
    skipped)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS: no 'keys' list")
    out: dict[str, jwt.PyJWK] = {}
    for n, data in enumerate(document["keys"]):
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        kid = data.get("kid")
        if not isinstance(kid, str) or not kid:
            kid = f"#{n}"  # addressable only by a token without a kid
        declared = data.get("alg")
        if declared is not None and declared not in algorithms:
            continue  # a key for an algorithm this server does not accept
        try:
            key = jwt.PyJWK(data, declared if isinstance(declared, str) else None)
        except Exception as exc:  # one malformed key must not cost the others
            log.warning("jwks key skipped kid=%s error=%r", excerpt(kid, 40), exc)
            continue
        if key.key_type == "oct":
            continue  # a symmetric secret has no place in a public key set
        out[kid] = key
    return out


def _fits(key: jwt.PyJWK, alg: str) -> bool:
    """Can ``key`` verify a token of ``alg``? (its kty, and its alg when it names one)"""
    declared = key.algorithm_name
    if declared and declared == alg:
        return True
    family = {"RSA": "RS", "EC": "ES", "OKP": "EdDSA"}.get(key.key_type or "", "")
    if family == "RS":
        return alg[:2] in ("RS", "PS")
    if family == "ES":
        return alg.startswith("ES") and (not declared or declared == alg)
    return family == alg


def _load_key(key: KeyLike, algorithms: frozenset[str]) -> object:
    """The typed key PyJWT verifies with, checked against the pinned algorithms."""
    hmac = algorithms <= HMAC_ALGORITHMS
    if isinstance(key, Mapping):
        jwk = jwt.PyJWK(dict(key))
        if (jwk.key_type == "oct") != hmac:
            raise ConfigError("the JWK's type does not fit the pinned algorithms")
        return jwk.key
    if isinstance(key, str | bytes):
        raw = key.encode() if isinstance(key, str) else key
        pem = raw.lstrip().startswith(b"-----BEGIN") or raw.startswith(b"ssh-")
        if hmac:
            if pem:
                raise ConfigError(
                    "an HS* algorithm with a PEM key: a public key must never be an HMAC "
                    "secret (that is the HS/RS confusion attack); pin RS/ES/EdDSA instead"
                )
            if len(raw) < 32:
                raise ConfigError("an HMAC secret must be at least 32 bytes (256 bits)")
            return raw
        if not pem:
            raise ConfigError("an asymmetric algorithm needs a PEM key (or a key object)")
        try:
            return serialization.load_pem_public_key(raw)
        except ValueError:
            try:
                private = serialization.load_pem_private_key(raw, password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"the key is not a PEM public or private key: {exc}") from None
            return private.public_key()
    if hmac:
        raise ConfigError("HS* algorithms take a secret (str or bytes), not a key object")
    public = getattr(key, "public_key", None)
    return public() if callable(public) else key


class JWTAuth:
    """An ``authenticate`` hook that verifies a JWT: ``Unbroken(auth=JWTAuth(...))``.

    Give exactly one of ``key`` (a PEM public key, a key object, a JWK mapping, or for
    ``HS*`` a secret of at least 32 bytes) and ``jwks_url``. ``algorithms`` is the
    list a token's ``alg`` must be in: HMAC (``HS*``) or asymmetric ones, not both.
    ``audience`` and ``issuer``, when given, must match ``aud``/``iss``; ``leeway``
    is the clock skew allowed, in seconds; ``principal_claim`` names the claim that
    is the principal's id (default ``sub``: a non-empty string). ``jwks_ttl``,
    ``jwks_min_interval`` and ``jwks_timeout`` tune the key set cache
    (:class:`JWKSCache`).

    A verified token gives ``Principal(id=claims[principal_claim], claims=claims,
    expires=exp + leeway)``.
    """

    def __init__(
        self,
        *,
        key: KeyLike | None = None,
        jwks_url: str | None = None,
        algorithms: Sequence[str],
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        principal_claim: str = "sub",
        jwks_ttl: float = 300.0,
        jwks_min_interval: float = 10.0,
        jwks_timeout: float = 5.0,
    ) -> None:
        if (key is None) == (jwks_url is None):
            raise ConfigError("JWTAuth needs exactly one of key= and jwks_url=")
        if isinstance(algorithms, str):
            raise ConfigError("algorithms is a list of names, e.g. ['RS256']")
        algs = frozenset(algorithms)
        if not algs:
            raise ConfigError("pin at least one algorithm, e.g. algorithms=['RS256']")
        unknown = algs - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ConfigError(
                f"algorithms not accepted: {sorted(unknown)} ('none' never is); "
                f"choose from {sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS)}"
            )
        if algs & HMAC_ALGORITHMS and algs & ASYMMETRIC_ALGORITHMS:
            raise ConfigError(
                "do not mix HS* with asymmetric algorithms in one JWTAuth (a public key "
                "would become an HMAC secret: the HS/RS confusion attack)"
            )
        if jwks_url is not None and algs & HMAC_ALGORITHMS:
            raise ConfigError("a JWKS carries public keys: pin asymmetric algorithms with it")
        if leeway < 0:
            raise ConfigError("leeway must not be negative")
        self.algorithms = sorted(algs)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.principal_claim = principal_claim
        self._key = _load_key(key, algs) if key is not None else None
        self.jwks: JWKSCache | None = (
            JWKSCache(
                jwks_url,
                algorithms=self.algorithms,
                ttl=jwks_ttl,
                min_interval=jwks_min_interval,
                timeout=jwks_timeout,
            )
            if jwks_url is not None
            else None
        )
        required = ["exp"]
        if audience is not None:
            required.append("aud")
        if issuer is not None:
            required.append("iss")
        self._options: Any = {"require": required, "verify_aud": audience is not None}

    async def __call__(self, hello: Hello, info: ConnectInfoLike = None) -> Principal:
        """The ``authenticate`` hook: the principal of ``hello.token``, or
        :class:`AuthError`."""
        return await self.verify(hello.token)

    async def verify(self, token: str | None) -> Principal:
        """Verify ``token``; its :class:`Principal`, or :class:`AuthError`."""
        if not token:
            raise AuthError("a token is required: send hello with token=<JWT>")
        header = self._header(token)
        if self.jwks is None:
            return self.verify_with(token, self._key)
        alg = header.get("alg")
        kid = header.get("kid")
        assert isinstance(alg, str)  # checked by _header
        jwk = await self.jwks.key(kid if isinstance(kid, str) else None, alg)
        return self.verify_with(token, jwk.key)

    def verify_sync(self, token: str) -> Principal:
        """Verify ``token`` with the ``key=`` given (no JWKS): for code that is not
        async. Raises :class:`AuthError`."""
        if self.jwks is not None:
            raise ConfigError("verify_sync needs key=; with jwks_url use verify()")
        self._header(token)
        return self.verify_with(token, self._key)

    def _header(self, token: str) -> dict[str, object]:
        try:
            header: dict[str, object] = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("token is not a well-formed JWT (header.payload.signature)") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            shown = excerpt(str(alg), 20)
            raise AuthError(
                f"token algorithm {shown!r} is not accepted here (accepted: "
                f"{', '.join(self.algorithms)})"
            )
        return header

    def verify_with(self, token: str, key: object) -> Principal:
        """Verify ``token`` against ``key`` (typed; the pinned algorithms only)."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            exp = _claim_time(token, "exp")
            raise AuthError(
                f"token expired{f' at {_when(exp)}' if exp else ''}; get a new token"
            ) from None
        except jwt.ImmatureSignatureError:
            nbf = _claim_time(token, "nbf")
            raise AuthError(
                f"token not valid yet{f' (nbf {_when(nbf)})' if nbf else ''}; check clocks"
            ) from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience (aud) is not this server's") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer (iss) is not the one this server trusts") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(
                f"token algorithm is not accepted here (accepted: {', '.join(self.algorithms)})"
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature does not verify (signed with another key?)") from None
        except jwt.InvalidKeyError:
            raise AuthError("token cannot be verified with this server's key") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"token refused: {excerpt(str(exc), 80)}") from None
        subject = claims.get(self.principal_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError(f"token has no {self.principal_claim!r} claim naming the principal")
        exp = claims.get("exp")
        expires = float(exp) + self.leeway if isinstance(exp, int | float) else None
        return Principal(subject, claims=claims, expires=expires)


def _claim_time(token: str, name: str) -> float | None:
    """A time claim of a token already refused (for the message), unverified."""
    try:
        value = jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.InvalidTokenError:
        return None
    return float(value) if isinstance(value, int | float) else None


__all__ = ["JWKSCache", "JWTAuth", "KeyLike"]
