"""The moving parts of a chaos run, usable on their own in your tests.

* :class:`ServerThread` (:mod:`.server_thread`) runs a real unbroken server (uvicorn on
  loopback) on its own thread and event loop, so the server's CPU time is measured apart
  from the client's and the proxy's, and a busy client cannot stall the server's heartbeats.
* :class:`WireTap` (:mod:`.tap`) is ASGI middleware that keeps every frame the server sends
  and receives, per connection: the sequence trace, and what was re-sent after a resume.
* :class:`AnswerBook` and :func:`answer_app` (:mod:`.answers`): an app whose agent
  ``answer`` replays a generated answer (:mod:`unbroken.chaos.generators`) at a pace.
* :class:`StreamRecorder` (:mod:`.recorder`) consumes a client
  :class:`~unbroken.client.Stream`, keeping each event (as a protocol
  :class:`~unbroken.protocol.events.Event`) and when it arrived.
* :class:`LogCapture` (:mod:`.logs`) keeps the client's, server's and proxy's log lines of
  a run; :class:`ResourceSampler` (:mod:`.resources`) its RSS and stream-log bytes.
* :class:`ChaosHarness` (:mod:`.chaos`) puts them together with a
  :class:`~unbroken.chaos.FaultProxy`::

      async with ChaosHarness() as h:
          async with h.client() as client:
              rec = await h.start(client, StreamingResponseSimulator(1).text_answer(50_000))
              await h.proxy.cut_all("rst")
              await rec.done()
          verdict = h.verify_client(rec)            # StateVerifier on what the client got
          log_verdict = await h.verify_log(rec)     # StateVerifier on the server's log

The test app's store class is this package's ``MemoryStore`` attribute, read when an app
is made: a plugin may swap it (``tests/integration/redis/scenario_plugin.py``).
"""

from __future__ import annotations

from ...store.memory import MemoryStore
from .answers import AnswerBook, Hold, answer_app
from .chaos import CHAOS_POLICY, ChaosHarness, chaos_harness
from .logs import OTHER_LOGGERS, LogCapture, LogLine
from .recorder import StreamRecorder, event_of
from .resources import ResourceSample, ResourceSampler
from .server_thread import SERVER_THREAD, ServerThread
from .tap import TapConnection, TapFrame, WireTap
from .tasks import reap

__all__ = [
    "CHAOS_POLICY",
    "OTHER_LOGGERS",
    "SERVER_THREAD",
    "AnswerBook",
    "ChaosHarness",
    "Hold",
    "LogCapture",
    "LogLine",
    "MemoryStore",
    "ResourceSample",
    "ResourceSampler",
    "ServerThread",
    "StreamRecorder",
    "TapConnection",
    "TapFrame",
    "WireTap",
    "answer_app",
    "chaos_harness",
    "event_of",
    "reap",
]
