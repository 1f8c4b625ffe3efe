"""The live dashboard of a ``chaos run --dashboard``: a page served by the run itself
(Starlette on uvicorn, on the run's event loop, on 127.0.0.1), updated over a WebSocket.

The page (``static/dashboard.html``, plain HTML and JavaScript) receives the run as a
list of events, replayed from the start to a page that connects late:

* ``plan``: the tier, the output folder, every run's id and scenario;
* ``started``: a run began; ``fault``: a fault of the running run was played;
* ``done``: a run's outcome (status, exact streams, failed checks, the recovery time,
  its samples, and whether a debug bundle was kept);
* ``finished``: the matrix is over (its verdict).

``GET /bundle/<run id>`` returns a failed run's debug bundle as JSON: its connection
event log (client and server), frame sequence, stream-log snapshot at the cut and timing
breakdown (detect → reconnect → resume → first new event), read from the artefacts the
run wrote (see docs/how-to/debug-a-failed-run.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    from ..testing import RunningServer
    from .run_result import RunResult
    from .spec import RunSpec

log = logging.getLogger(__name__)

#: What a bundle is read from, in a run's artefacts folder (see artefacts.py).
_BUNDLE_FILES = {
    "client_log": "client.log",
    "server_log": "server.log",
    "faults": "proxy-faults.jsonl",
    "sequence": "sequence.jsonl",
    "snapshot": "snapshot.json",
    "timing": "timing.json",
    "verdicts": "verdicts.json",
}
#: A bundle's text files are cut to this many characters (a 10 MB run logs a lot).
_BUNDLE_CAP = 400_000


def page() -> str:
    """The dashboard's page (a static file of the package)."""
    return (
        resources.files(__package__ or "unbroken.scenarios") / "static" / "dashboard.html"
    ).read_text("utf-8")


class Dashboard:
    """The run's state as events, the page and its WebSocket. Use on the run's loop:
    ``async with Dashboard(...).serving() as url``; feed it with :meth:`started`,
    :meth:`fault`, :meth:`done`, :meth:`finished`."""

    def __init__(self, specs: Sequence[RunSpec], *, tier: str, out: Path, port: int = 0) -> None:
        self.out = out
        self.port = port
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._current: str | None = None
        self._results: dict[str, RunResult] = {}
        self.url: str | None = None
        self._emit(
            {
                "type": "plan",
                "tier": tier,
                "out": str(out),
                "runs": [{"id": s.id, "scenario": s.scenario} for s in specs],
            }
        )

    # ------------------------------------------------------------------ feeding
    def _emit(self, event: dict[str, Any]) -> None:
        event["t"] = round(time.monotonic() - self.t0, 3)
        self.events.append(event)
        for q in list(self._queues):
            q.put_nowait(event)

    def started(self, spec: RunSpec) -> None:
        self._current = spec.id
        self._emit({"type": "started", "id": spec.id, "scenario": spec.scenario})

    def fault(self, spec: RunSpec, what: str) -> None:
        """A fault of ``spec``'s run was played (the fault being injected now)."""
        self._emit({"type": "fault", "id": spec.id, "scenario": spec.scenario, "what": what})

    def done(self, result: RunResult) -> None:
        self._results[result.id] = result
        m = result.metrics
        self._emit(
            {
                "type": "done",
                "id": result.id,
                "scenario": result.spec.scenario,
                "status": result.status,
                "exact": result.exact,
                "streams": result.streams,
                "streams_exact": result.streams_exact,
                "failed_checks": [c.name for c in result.failed_checks()],
                "error": result.error,
                "recovery_s": m.recovery_s,
                "samples": result.samples.get("recovery", [])[:2000]
                or ([m.recovery_s] if m.recovery_s is not None else []),
                "timing": {
                    "detect": m.detection_s,
                    "reconnect": m.reconnect_s,
                    "resume": m.resume_s,
                    "recovery": m.recovery_s,
                },
                "wall_s": round(result.wall_s, 3),
                "bundle": result.artefacts is not None,
            }
        )

    def finished(self, ok: bool) -> None:
        self._emit({"type": "finished", "ok": ok})

    # ------------------------------------------------------------------ serving
    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Route, WebSocketRoute
        from starlette.websockets import WebSocketDisconnect

        html = page()

        async def index(_: Request) -> Response:
            return HTMLResponse(html, headers={"cache-control": "no-store"})

        async def bundle(request: Request) -> Response:
            run_id = request.path_params["run_id"]
            found = self.bundle(run_id)
            if found is None:
                return JSONResponse(
                    {"error": f"no debug bundle for {run_id!r} (only failed runs keep one)"},
                    status_code=404,
                )
            return JSONResponse(found)

        async def feed(ws: WebSocket) -> None:
            await ws.accept()
            q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            backlog = list(self.events)
            self._queues.add(q)
            try:
                await ws.send_text(json.dumps({"type": "replay", "events": backlog}))
                while True:
                    event = await q.get()
                    if event is None:
                        break
                    await ws.send_text(json.dumps(event))
                await ws.close()
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # the page went away
            finally:
                self._queues.discard(q)

        return Starlette(
            routes=[
                Route("/", index),
                Route("/bundle/{run_id}", bundle),
                WebSocketRoute("/ws", feed),
            ]
        )

    def bundle(self, run_id: str) -> dict[str, Any] | None:
        """A failed (or kept) run's debug bundle, from its artefacts; None: none kept."""
        result = self._results.get(run_id)
        if result is None or result.artefacts is None:
            return None
        folder = (self.out / result.artefacts).resolve()
        root = self.out.resolve()
        if root not in folder.parents:
            return None
        out: dict[str, Any] = {
            "id": run_id,
            "folder": str(folder),
            "status": result.status,
            "checks": [c.to_dict() for c in result.checks],
            "error": result.error,
            "notes": result.notes,
        }
        for key, name in _BUNDLE_FILES.items():
            path = folder / name
            try:
                text = path.read_text("utf-8")
            except OSError:
                out[key] = None
                continue
            if name.endswith(".json"):
                try:
                    out[key] = json.loads(text)
                    continue
                except ValueError:
                    pass
            out[key] = text[:_BUNDLE_CAP] + ("\n… (cut)" if len(text) > _BUNDLE_CAP else "")
        m = result.metrics
        out["breakdown"] = [
            {"step": "detect (fault → client saw the drop)", "s": m.detection_s},
            {"step": "reconnect (fault → connected)", "s": m.reconnect_s},
            {"step": "resume (connected → first new event)", "s": m.resume_s},
            {"step": "complete recovery (fault → answer whole)", "s": m.recovery_s},
        ]
        return out

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve the page on 127.0.0.1 (a free port unless ``port``); yields its URL."""
        from ..testing import serve

        server: RunningServer
        async with serve(self.app(), host="127.0.0.1", port=self.port, path="/") as server:
            self.url = f"http://127.0.0.1:{server.port}/"
            try:
                yield self.url
            finally:
                for q in list(self._queues):
                    q.put_nowait(None)


__all__ = ["Dashboard", "page"]
