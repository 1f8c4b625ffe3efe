"""The hub runs agents. Runs belong to the hub, never to a connection, so a drop
never stops one. It also applies retention and drains runs on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    Forbidden,
    LogDiverged,
    LogFull,
    StaleProducer,
    StoreUnavailable,
    StreamTooLarge,
    UnknownAgent,
)
from ..observe import Observer
from ..protocol.frames import excerpt
from ..store.base import Created, LiveIndex, StreamLog
from .admission import Admission, AdmissionLimits, PrincipalKey
from .agent import Agent, Output, Principal, Request
from .flag import Flag
from .producer import Producer
from .shape import agent_shape, not_awaitable

log = logging.getLogger(__name__)

#: what a client is told of an agent's exception: ``redact(exc) -> text``
Redact = Callable[[BaseException], str]


def redact_exception(exc: BaseException) -> str:
    """The default redaction: the exception's type and a generic message
    (``internal error in agent: ValueError``). Its message may hold secrets (keys,
    URLs, user data), so it goes to the server log only, with the traceback."""
    return f"internal error in agent: {type(exc).__name__}"


def reveal_exception(exc: BaseException) -> str:
    """A redaction hook that hides nothing: ``Type: message`` (for development and
    tests; ``Unbroken(redact=reveal_exception)``)."""
    return _describe(exc)


@dataclass(slots=True)
class AgentRun:
    """One agent run (the store's runs of events are another thing: ``EventRun``)."""

    stream: str
    agent: str
    owner: str
    producer: Producer
    key: PrincipalKey = ("", "")  # what admission counts it under
    task: asyncio.Task[None] | None = None
    attached: int = 0
    stop_reason: str = ""  # "cancel" | "shutdown" | "abandoned"
    ending: bool = False  # writing the end event: no longer cancellable
    abandon_timer: asyncio.TimerHandle | None = None
    done: Flag = field(default_factory=Flag)
    #: the producer's seq when the stall watchdog last saw it change, and when
    seen_seq: int = -1
    seen_at: float = 0.0
    span: Any = None  # the run's trace span (unbroken.observe.tracing)
    status: str = "running"  # as the end event says, once written


class _NotAwaitable(Exception):
    """An agent returned something that cannot be awaited."""


def _awaitable(result: Awaitable[None], name: str, fn: object) -> Awaitable[None]:
    """``result`` of calling the agent ``name``, or :class:`_NotAwaitable` that
    says why it cannot run (a ``lambda`` or a wrapper returning the coroutine is fine)."""
    if inspect.isawaitable(result):
        return result
    raise _NotAwaitable(not_awaitable(f"agent {name!r}", result, agent_shape(fn)))


class Hub:
    """Starts, tracks and stops agent runs over a :class:`StreamLog`."""

    def __init__(
        self,
        store: StreamLog,
        agents: dict[str, tuple[Agent, float | None]],
        *,
        max_chunk: int = 1024 * 1024,
        run_timeout: float | None = None,
        abandon_after: float | None = None,
        sweep_every: float = 1.0,
        coalesce: float = 0.0,
        clock: Callable[[], float] = time.time,
        admission: AdmissionLimits | None = None,
        redact: Redact | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        #: metrics, traces, the connection event log (the app's; off when built alone)
        self.observer = observer if observer is not None else Observer(metrics=False)
        #: what clients learn of an agent's exception (the log gets all of it)
        self.redact: Redact = redact if redact is not None else redact_exception
        self.admission = admission if admission is not None else AdmissionLimits()
        #: live runs, loop lag and RSS, and the decisions on them
        self.gate = Admission(self.admission)
        #: fail a run whose agent wrote nothing for this long (seconds)
        self.stall_timeout = self.admission.stall_timeout
        #: per-agent stall limits (by agent name), over :attr:`stall_timeout`
        self.stall_timeouts: dict[str, float] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._refusal_logged_at = -1e9  # monotonic time of the last "start refused" warning
        self._refusals_logged = 0
        self.agents = agents
        self.max_chunk = max_chunk
        #: one bound method handed to every run's Output (not 64 B more per stream)
        self._redact_hook = self._redacted
        #: a done future of the loop the runs run on, shared by their Outputs (what
        #: ``out.text()`` returns when there is nothing to wait for; 144 B a stream)
        self._done: asyncio.Future[None] | None = None
        self.run_timeout = run_timeout
        self.abandon_after = abandon_after
        self.sweep_every = sweep_every
        self.coalesce = coalesce
        self.clock = clock
        self.runs: dict[str, AgentRun] = {}
        #: starts whose create is under way, by (owner, scope, req): a start repeated
        #: meanwhile (its client told the log was slow) waits for the same create
        self._creating: dict[tuple[str, str, str], asyncio.Future[Created]] = {}
        #: the task doing each of those creates (shutdown cancels one still at it
        #: when its grace is over)
        self._creators: dict[asyncio.Future[Created], asyncio.Task[Any]] = {}
        #: creates that shutdown cancelled (their callers get StoreUnavailable)
        self._shed: set[asyncio.Future[Created]] = set()
        #: shutdown's grace is over: a run a create starts now is stopped at once
        self._drained = False
        self.accepting = True
        self._sweeper: asyncio.Task[None] | None = None

    def set_admission(self, limits: AdmissionLimits) -> None:
        """Replace the admission limits (before serving: ``unbroken serve``'s flags
        over an imported app). Live run counts carry over; the new limits' monitor
        starts with the next connection."""
        old = self.gate
        self.admission = limits
        self.gate = Admission(limits)
        self.gate.runs = old.runs
        self.gate.per_principal = dict(old.per_principal)
        self.stall_timeout = limits.stall_timeout
        if old._monitor is not None:
            old._monitor.cancel()

    def ensure_started(self) -> None:
        """Start background work (retention sweeps) on the running loop."""
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._sweeper.done() or self._sweeper.get_loop() is not loop:
            self._sweeper = loop.create_task(self._sweep_loop(), name="unbroken-sweeper")
        self.gate.ensure_started()
        w = self._watchdog
        watch = self.stall_timeout is not None or bool(self.stall_timeouts)
        if watch and (w is None or w.done() or w.get_loop() is not loop):
            self._watchdog = loop.create_task(self._stall_loop(), name="unbroken-stall-watchdog")

    def stall_limit(self, agent: str) -> float | None:
        """How long ``agent`` may write nothing before its run fails ``stalled``."""
        return self.stall_timeouts.get(agent, self.stall_timeout)

    async def _stall_loop(self) -> None:
        """Fail runs whose agent has written nothing for its stall limit
        (:meth:`stall_limit`). Reads each producer's seq a few times per limit:
        nothing on the agent's hot path."""
        loop = asyncio.get_running_loop()
        while True:
            limits = [x for x in (self.stall_timeout, *self.stall_timeouts.values()) if x]
            every = min(1.0, max(0.02, min(limits, default=4.0) / 4))
            await asyncio.sleep(every)
            now = loop.time()
            for run in list(self.runs.values()):
                limit = self.stall_limit(run.agent)
                if limit is None:
                    continue
                seq = run.producer.seq
                if seq != run.seen_seq:
                    run.seen_seq, run.seen_at = seq, now
                elif now - run.seen_at >= limit and not run.stop_reason:
                    log.warning(
                        "run stalled stream=%s agent=%s seq=%d silent=%.1fs",
                        run.stream,
                        run.agent,
                        seq,
                        now - run.seen_at,
                    )
                    self._stop(run, "stalled")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            try:
                dropped = await self.store.sweep(self.clock())
                if dropped:
                    log.info("retention dropped=%d", dropped)
            except Exception:
                log.exception("retention sweep failed")

    # ------------------------------------------------------------ runs
    async def start(
        self,
        principal: Principal,
        req: str,
        agent: str,
        input: Any,
        *,
        late: tuple[float, Callable[[], None]] | None = None,
    ) -> Created:
        """Start ``agent`` for ``(principal, req)``, or return the stream already started.

        Raises :class:`UnknownAgent`, :class:`~unbroken.errors.LogFull`, and
        :class:`~unbroken.errors.Overloaded` when admission refuses a new run
        (:mod:`unbroken.server.admission`).

        ``late=(seconds, call)``: ``call()`` is made if the log has not answered
        within ``seconds`` (the caller tells its client to start again; this call
        still waits for the create, and starts the run once). A start of the same
        ``req`` while a create of it is under way waits for that same create.
        """
        if agent not in self.agents:
            raise UnknownAgent(agent, sorted(self.agents))
        flight = (principal.id, principal.scope, req)
        timer = None
        if late is not None:
            timer = asyncio.get_running_loop().call_later(*late)
        try:
            creating = self._creating.get(flight)
            if creating is not None:
                # its client was told the log is slow and sent it again: one create,
                # one run (shielded: this caller's end does not end the create)
                return await asyncio.shield(creating)
            return await self._begin(principal, req, agent, input, flight)
        finally:
            if timer is not None:
                timer.cancel()

    async def _begin(
        self,
        principal: Principal,
        req: str,
        agent: str,
        input: Any,
        flight: tuple[str, str, str],
    ) -> Created:
        """Admit a new start and create its stream (and run); the stream of a
        repeated start refused for load."""
        key = (principal.id, principal.scope)
        refused = self.gate.check(key)
        if refused is not None:
            # a repeated start of a request already started gets its stream, whatever
            # the load: only new work is refused
            existing = await self.store.find(principal.id, req, principal.scope)
            if existing is not None:
                log.info("start repeated stream=%s req=%s", existing.stream, req)
                return existing
            self.gate.count(refused)
            # one warning a second at most: an overload must not also flood the log
            now = time.monotonic()
            if now - self._refusal_logged_at >= 1.0:
                total = sum(self.gate.refused.values())
                log.warning(
                    "start refused req=%s owner=%s runs=%d lag_ms=%.0f refused_total=%d "
                    "(+%d since the last line): %s",
                    req,
                    principal.id,
                    self.gate.runs,
                    self.gate.lag * 1000,
                    total,
                    total - self._refusals_logged,
                    refused.error,
                )
                self._refusal_logged_at, self._refusals_logged = now, total
            else:
                log.debug("start refused req=%s owner=%s: %s", req, principal.id, refused.error)
            raise refused.error
        self.gate.admitted(key)  # held across the create: concurrent starts count it
        outcome: asyncio.Future[Created] = asyncio.get_running_loop().create_future()
        self._creating[flight] = outcome
        task = asyncio.current_task()
        if task is not None:
            self._creators[outcome] = task
        try:
            created = await self._create(principal, req, agent, input, key)
        except asyncio.CancelledError:
            if outcome in self._shed and task is not None and task.uncancel() == 0:
                # shutdown gave up on it (its grace is over): its callers are told the
                # log did not answer (they start again on another node); no run
                gone = StoreUnavailable("the log did not answer within the shutdown's grace")
                outcome.set_exception(gone)
                outcome.exception()
                raise gone from None
            outcome.cancel()
            raise
        except BaseException as exc:
            outcome.set_exception(exc)
            outcome.exception()  # retrieved: maybe nobody else waits for it
            raise
        finally:
            if self._creating.get(flight) is outcome:
                del self._creating[flight]
            self._creators.pop(outcome, None)
            self._shed.discard(outcome)
        outcome.set_result(created)
        return created

    async def _create(
        self, principal: Principal, req: str, agent: str, input: Any, key: PrincipalKey
    ) -> Created:
        """Create the stream of ``req`` in the log and start its run."""
        try:
            if isinstance(self.store, LiveIndex):  # it lists runs itself: name the agent
                created = await self.store.create(
                    principal.id, req, self.clock(), principal.scope, agent=agent
                )
            else:
                created = await self.store.create(principal.id, req, self.clock(), principal.scope)
        except BaseException:
            self.gate.released(key)
            raise
        if not created.created:
            self.gate.released(key)
            log.info("start repeated stream=%s req=%s", created.stream, req)
            return created
        fn, timeout = self.agents[agent]
        producer = Producer(
            self.store,
            created.stream,
            created.epoch,
            created.producer,
            coalesce=self.coalesce,
        )
        run = AgentRun(created.stream, agent, principal.id, producer, key)
        run.span = self.observer.run_started(created.stream, agent)
        self.runs[created.stream] = run
        request = Request(agent, input, principal, created.stream, req)
        run.task = asyncio.get_running_loop().create_task(
            self._run(run, fn, request, timeout if timeout is not None else self.run_timeout),
            name=f"unbroken-run-{created.stream}",
        )
        log.info("run started stream=%s agent=%s owner=%s", created.stream, agent, principal.id)
        if self._drained and not self.accepting:  # its create ignored shutdown's cancel
            asyncio.get_running_loop().call_soon(self._stop, run, "shutdown")
        return created

    def _redacted(self, exc: BaseException) -> str:
        """What the run's end tells clients about ``exc`` (the hook's text; the
        default's when the hook fails or gives no string)."""
        try:
            text = self.redact(exc)
        except Exception:
            log.exception("redact hook failed; the default redaction is used")
            return redact_exception(exc)
        if not isinstance(text, str):
            log.error("redact hook returned %s, not a str; the default is used", type(text))
            return redact_exception(exc)
        return text

    async def _run(self, run: AgentRun, fn: Agent, request: Request, limit: float | None) -> None:
        out = Output(run.producer, self.max_chunk, self._redact_hook)
        done = self._done
        loop = asyncio.get_running_loop()
        if done is None or done.get_loop() is not loop:
            done = self._done = loop.create_future()
            done.set_result(None)
        out._done = done
        status, error = "completed", ""
        try:
            # no limit, no Timeout (an object and its dict a run, ~0.1 KB)
            deadline = asyncio.timeout(limit) if limit is not None else None
            try:
                if deadline is None:
                    await _awaitable(fn(request, out), run.agent, fn)
                else:
                    async with deadline:
                        await _awaitable(fn(request, out), run.agent, fn)
                await out.close_open_parts()
                await out.flush()
            except TimeoutError:
                if deadline is None or not deadline.expired():  # the agent's own timeout
                    raise
                status, error = "failed", "timeout"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                reason = run.stop_reason or "cancel"
                if reason == "shutdown":
                    status, error = "failed", "shutdown"
                elif reason == "stalled":
                    status, error = (
                        "failed",
                        f"stalled: no output for {self.stall_limit(run.agent):g}s",
                    )
                else:
                    status, error = "cancelled", reason if reason != "cancel" else ""
        except StaleProducer:
            log.warning("run fenced out stream=%s", run.stream)
            run.producer.abandon()
            self._forget(run)
            return
        except LogDiverged as exc:  # the store ended the stream failed: diverged
            log.error(
                "run's log lost events stream=%s head=%d appended=%d: ended failed diverged",
                exc.stream,
                exc.head,
                exc.expected,
            )
            run.producer.abandon()
            self._forget(run)
            return
        except StreamTooLarge as exc:
            status, error = "failed", f"stream_too_large: {exc}"
        except LogFull as exc:
            status, error = "failed", f"log_full: {exc}"
        except _NotAwaitable as exc:  # a mistake in the app, not a secret: say it
            log.error("agent cannot run stream=%s: %s", run.stream, exc)
            status, error = "failed", str(exc)
        except Exception as exc:
            log.error(
                "agent failed stream=%s agent=%s error=%s",
                run.stream,
                run.agent,
                excerpt(_describe(exc)),
                exc_info=exc,
            )
            error = self._redacted(exc)
            status = "failed"
        run.ending = True
        try:
            if status != "completed":
                with contextlib.suppress(Exception):
                    await out.close_open_parts(status)
            status, error = await run.producer.finish(status, error, self.clock())
            run.status = status
            log.info(
                "run ended stream=%s status=%s error=%s events=%d",
                run.stream,
                status,
                error,
                run.producer.seq,
            )
        except (StaleProducer, LogDiverged) as exc:  # ended or taken over by the store
            log.warning("run ended by the store stream=%s: %s", run.stream, exc)
            run.producer.abandon()
        except Exception:
            # never leave the stream running: the store ends it failed: producer_lost
            # now, or stops renewing it so that any node tailing it does
            log.exception("could not end stream=%s; releasing it", run.stream)
            run.producer.abandon()
            await self.store.release(run.stream, run.producer.token, self.clock())
        finally:
            self._forget(run)

    def _forget(self, run: AgentRun) -> None:
        if self.runs.pop(run.stream, None) is not None:
            self.gate.released(run.key)
            self.observer.run_ended(run.span, run.producer.seq, run.status)
        if run.abandon_timer is not None:
            run.abandon_timer.cancel()
            run.abandon_timer = None
        run.done.set()

    def live(self, principal: Principal) -> list[AgentRun]:
        """The runs of ``principal`` (its id and request-id scope) on this hub that have
        not ended, oldest first (``list`` / ``streams``)."""
        key = (principal.id, principal.scope)
        return [r for r in self.runs.values() if r.key == key and r.status == "running"]

    async def cancel(self, principal: Principal, stream: str) -> bool:
        """Stop a run; ``False`` if it already ended. Raises :class:`Forbidden`."""
        meta = await self.store.meta(stream)
        if meta is None or meta.owner != principal.id or meta.scope != principal.scope:
            raise Forbidden(f"stream {stream} is unknown to you or belongs to someone else")
        run = self.runs.get(stream)
        if run is None or run.task is None or run.task.done():
            return False
        self._stop(run, "cancel")
        return True

    def _stop(self, run: AgentRun, reason: str) -> None:
        if run.ending:
            return
        if not run.stop_reason:
            run.stop_reason = reason
            log.info("run stopping stream=%s reason=%s", run.stream, reason)
        if run.task is not None:
            run.task.cancel()

    # ------------------------------------------------------------ attachment counts
    def attached(self, stream: str) -> None:
        run = self.runs.get(stream)
        if run is None:
            return
        run.attached += 1
        if run.abandon_timer is not None:
            run.abandon_timer.cancel()
            run.abandon_timer = None

    def detached(self, stream: str) -> None:
        run = self.runs.get(stream)
        if run is None:
            return
        run.attached = max(0, run.attached - 1)
        if run.attached == 0 and self.abandon_after is not None and run.abandon_timer is None:
            run.abandon_timer = asyncio.get_running_loop().call_later(
                self.abandon_after, self._stop, run, "abandoned"
            )

    # ------------------------------------------------------------ shutdown
    async def shutdown(self, grace: float) -> None:
        """Refuse new runs, let running ones finish within ``grace`` seconds, then
        end the rest ``failed: shutdown``.

        One budget: a start still creating its stream (its log slow) is waited for
        within the same ``grace``, and its run drains with the others; one still
        creating when the grace is over is cancelled (its callers get
        :class:`StoreUnavailable`), as the runs are stopped. What was stopped gets
        5 s more to end (an agent or a store that swallows cancellation is logged)."""
        self.accepting = False
        self._drained = False  # a hub served again (the lifespan) drains afresh
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.runs or self._creating:
            log.info(
                "draining runs=%d creating=%d grace=%.1fs",
                len(self.runs),
                len(self._creating),
                grace,
            )
        while True:
            creating: list[asyncio.Future[Any]] = [
                f for f in self._creating.values() if not f.done()
            ]
            runs = [r for r in self.runs.values() if not r.done.is_set()]
            left = deadline - loop.time()
            if (not creating and not runs) or left <= 0:
                break
            waits = [asyncio.ensure_future(r.done.wait()) for r in runs]
            every = asyncio.gather(*waits) if creating and waits else None
            try:
                if creating:  # a create that ends adds its run: wait again with it
                    if every is not None:
                        creating.append(every)
                    await asyncio.wait(creating, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.wait(waits, timeout=left)
            finally:
                if every is not None:
                    every.cancel()
                for w in waits:
                    w.cancel()
        self._drained = True
        shed = [f for f in self._creating.values() if not f.done()]
        for f in shed:
            creator = self._creators.get(f)
            if creator is not None:
                self._shed.add(f)
                creator.cancel()
        if shed:
            log.warning(
                "starts still creating at the end of the grace cancelled count=%d", len(shed)
            )
        for r in list(self.runs.values()):
            self._stop(r, "shutdown")
        try:
            # not wait_for: on 3.11 it loses a cancel of this drain that comes
            # as the last run ends (the lifespan's shutdown would go on)
            async with asyncio.timeout(5.0):
                if shed:
                    await asyncio.wait(shed)
                    await asyncio.sleep(0)  # a run such a create started: stopped now
                stopping = [r for r in self.runs.values() if not r.done.is_set()]
                await asyncio.gather(*(r.done.wait() for r in stopping))
        except TimeoutError:  # an agent (or a store) that swallows cancellation
            stuck = [r.stream for r in self.runs.values() if not r.done.is_set()]
            log.error("runs did not stop on shutdown streams=%s", ",".join(stuck))
            reqs = [flight[2] for flight, f in self._creating.items() if not f.done()]
            if reqs:
                log.error("starts did not stop on shutdown reqs=%s", ",".join(reqs))
        for task in (self._sweeper, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.gate.stop()


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an agent's exception; its ``__str__`` may itself fail."""
    try:
        text = str(exc)
    except Exception:
        text = "<exception message could not be read>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
