"""The server the Durable Streams conformance suite runs against.

An anonymous unbroken app (memory store) whose HTTP transport answers at
``/v1/stream/...`` (byte and JSON streams) and ``/v1/agent/...`` (agent streams). Any
origin is allowed (the suite's CORS tests send ``Origin: https://example.com``), and
long-polls time out after ``UNBROKEN_LONG_POLL`` seconds (2 by default: the suite
waits for many 204s, and its own test timeout is 21 s).
"""

from __future__ import annotations

import os

from unbroken import Unbroken
from unbroken.server.asgi import ASGIApp
from unbroken.server.policy import OriginPolicy

unbroken_app = Unbroken(allow_anonymous=True, policy=OriginPolicy(allow_any_origin=True))
app = ASGIApp(unbroken_app, long_poll_timeout=float(os.environ.get("UNBROKEN_LONG_POLL", "2")))
