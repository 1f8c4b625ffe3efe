"""The example agents inside a FastAPI application, both ways:

* ``/agent``: the unbroken ASGI app mounted as a sub-application (WebSocket at
  ``/agent/ws``, health at ``/agent/healthz``); this one is anonymous, as in
  :mod:`examples.agent_app`.
* ``/secure``: the ``APIRouter`` form, where the principal comes from an ordinary
  FastAPI dependency (typed on ``HTTPConnection`` so it runs for WebSockets). The
  token is read from a cookie or the query string, because browsers cannot set
  headers on a WebSocket handshake: ``ws://127.0.0.1:8000/secure/ws?token=demo-token``.

Run it::

    unbroken serve examples.fastapi_app:api --port 8000
"""

from __future__ import annotations

import os

from fastapi import FastAPI, WebSocketException, status
from starlette.requests import HTTPConnection

from unbroken.server import Principal, Unbroken

from .agent_app import create_app

#: token -> principal id. A real app checks a session cookie or a JWT here.
TOKENS = {os.environ.get("UNBROKEN_EXAMPLE_TOKEN", "demo-token"): "demo-user"}


async def principal_from_token(conn: HTTPConnection) -> Principal:
    token = conn.cookies.get("unbroken_token") or conn.query_params.get("token")
    who = TOKENS.get(token or "")
    if who is None:
        # before the handshake is accepted, this refuses it (HTTP 403)
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad token")
    return Principal(who)


def create_api(agents: Unbroken | None = None) -> FastAPI:
    agents = agents if agents is not None else create_app()
    # the lifespan drains running agents on shutdown (a mounted app's own
    # lifespan is not run by Starlette, so hand it to FastAPI)
    api = FastAPI(title="unbroken example", lifespan=agents.lifespan)
    api.mount("/agent", agents.asgi())
    api.include_router(agents.router(principal=principal_from_token), prefix="/secure")

    @api.get("/")
    async def index() -> dict[str, str]:
        return {"agent": "/agent/ws", "secure": "/secure/ws?token=…", "health": "/agent/healthz"}

    return api


api = create_api()
