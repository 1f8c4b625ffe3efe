"""Real signing keys, real signed JWTs, and a real JWKS served over HTTP, for tests.

Nothing here is mocked: tokens are signed by PyJWT with keys from ``cryptography``,
and the JWKS is a JSON document served by ``http.server`` on a loopback port (in a
thread), whose key set a test can rotate while streams run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://idp.test/"
AUDIENCE = "unbroken-api"


@dataclass
class SigningKey:
    """A private key, the algorithm it signs with and its key id."""

    alg: str
    private: Any
    kid: str

    @property
    def public(self) -> Any:
        return self.private.public_key() if hasattr(self.private, "public_key") else self.private

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        """The public JWK (as an identity provider publishes it)."""
        data: dict[str, Any] = json.loads(_public_jwk(self))
        return data

    def token(
        self,
        sub: str = "alice",
        *,
        lifetime: float = 60.0,
        aud: str | None = AUDIENCE,
        iss: str | None = ISSUER,
        kid: bool = True,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """A signed JWT for ``sub`` valid ``lifetime`` seconds from ``now``."""
        t = time.time() if now is None else now
        payload: dict[str, Any] = {"sub": sub, "iat": int(t), "exp": t + lifetime, **claims}
        if aud is not None:
            payload["aud"] = aud
        if iss is not None:
            payload["iss"] = iss
        headers = {"kid": self.kid} if kid else None
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=headers)


def _public_jwk(key: SigningKey) -> str:
    algo = jwt.get_algorithm_by_name(key.alg)
    data = json.loads(algo.to_jwk(key.public))
    data.update({"kid": key.kid, "alg": key.alg, "use": "sig"})
    return json.dumps(data)


def rsa_key(kid: str = "rsa-1", alg: str = "RS256") -> SigningKey:
    return SigningKey(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048), kid)


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey("ES256", ec.generate_private_key(ec.SECP256R1()), kid)


def ed_key(kid: str = "ed-1") -> SigningKey:
    return SigningKey("EdDSA", ed25519.Ed25519PrivateKey.generate(), kid)


def hmac_key(kid: str = "hs-1") -> SigningKey:
    return SigningKey("HS256", b"s3cr3t-" * 6, kid)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(sub: str = "alice", lifetime: float = 60.0) -> str:
    """A token with ``alg: none`` and no signature (the classic forgery)."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(
        json.dumps(
            {"sub": sub, "exp": int(time.time() + lifetime), "aud": AUDIENCE, "iss": ISSUER}
        ).encode()
    )
    return f"{header}.{payload}."


def hs256_with_public_key(key: SigningKey, sub: str = "alice") -> str:
    """HS256 signed with the RSA *public* key's PEM as the HMAC secret (the HS/RS
    confusion attack: a verifier that lets the token pick the algorithm accepts it)."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(
        json.dumps(
            {"sub": sub, "exp": int(time.time() + 60), "aud": AUDIENCE, "iss": ISSUER}
        ).encode()
    )
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(key.public_pem(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


@dataclass
class JWKSServer:
    """A JWKS endpoint on loopback: ``url``; ``keys`` is what it serves now
    (replace it to rotate); ``requests`` counts the GETs it answered."""

    keys: list[SigningKey]
    url: str = ""
    requests: int = 0
    fail: bool = False  # answer 503 (the identity provider is down)
    delay: float = 0.0  # seconds each answer takes (a slow identity provider)
    answered: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def document(self) -> bytes:
        return json.dumps({"keys": [json.loads(_public_jwk(k)) for k in self.keys]}).encode()


@contextmanager
def jwks_server(keys: list[SigningKey]) -> Iterator[JWKSServer]:
    state = JWKSServer(list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
                fail = state.fail
                delay = state.delay
                body = state.document()
            if delay:
                time.sleep(delay)  # this is the HTTP server's own thread
            if fail:
                self.send_response(503)
                self.end_headers()
                return
            # set before the body goes: once the client has it, it is set (after the
            # write, a loaded machine let the server accept the connection first)
            state.answered.set()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
