"""``unbroken serve module:app``: run an unbroken app (or any ASGI app) with uvicorn.

Registered in :mod:`unbroken.cli`. Flags are named as uvicorn's; defaults follow
uvicorn's except permessage-deflate, which is off (it costs ~5x throughput and
~32 KB per idle connection for this traffic; turn it on where the link is the
bottleneck), and the client message limit (``--ws-max-size``: the app's
``max_client_frame``, 1 MiB). uvloop is used when it is installed. The server runs
behind the connection guard (:mod:`unbroken.server.guard`: handshake deadline,
connection caps) and its log handlers drop floods of identical warnings
(:mod:`unbroken.server.logfilter`). Heavy imports happen inside the command so
``unbroken --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import importlib
import logging
import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, cast

if TYPE_CHECKING:
    import typer


#: seconds a worker waits, once served, for its leftover tasks to end after their
#: cancel (the default of ``--leftover-grace``)
LEFTOVER_GRACE = 10.0


async def _end_tasks(grace: float) -> list[str]:
    """Cancel every other task; wait ``grace`` s; describe those still running."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    if not tasks:
        return []
    # a clean shutdown leaves none (the lifespan drained the runs, closed the store)
    logging.getLogger("unbroken.server").info(
        "shutdown: %d task(s) left after serving, cancelled: %s",
        len(tasks),
        ", ".join(sorted(t.get_name() for t in tasks)),
    )
    for t in tasks:
        t.cancel()
    _, pending = await asyncio.wait(tasks, timeout=grace)
    return [f"{t.get_name()} {t.get_coro()!r}" for t in pending]


def use_typer() -> Any:
    """:func:`serve_command`, bound to Typer (for :mod:`unbroken.cli`).

    This module does not import Typer itself: Typer (0.29) brings pydantic, ~7 MB that
    a serving process would keep for its whole life. ``serve_command``'s options are
    declared with ``typer.Option`` in (string) annotations and its body raises
    ``typer.BadParameter``/``typer.Exit``; the name ``typer`` here is either Typer,
    bound by this call, or :func:`lean_main`'s stand-in built on click (which uvicorn
    imports anyway)."""
    import typer as real

    globals()["typer"] = real
    return serve_command


def load_target(target: str, app_dir: str = ".") -> Any:
    """Import ``module:attribute`` (the attribute may be dotted), as uvicorn does."""
    from ..errors import ConfigError

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected module:attribute, got {target!r}")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # an import inside the module failed: show the real error
        raise ConfigError(
            f"could not import module {module_name!r} (app dir {app_dir!r})"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _log_config(
    level: str, flood_burst: int, tag: str = "", log_format: str = "text"
) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    cfg: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":  # one JSON object per line (unbroken.observe.logs)
        for name in cfg["formatters"]:
            cfg["formatters"][name] = {"()": "unbroken.observe.logs.JsonFormatter", "tag": tag}
        cfg.setdefault("filters", {})["echo"] = {"()": "unbroken.observe.logs.EventEchoFilter"}
        for handler in cfg["handlers"].values():
            handler.setdefault("filters", []).append("echo")
        tag = ""
    if tag:  # which worker wrote the line
        for formatter in cfg["formatters"].values():
            formatter["fmt"] = formatter["fmt"].replace(
                "%(levelprefix)s", f"%(levelprefix)s [{tag}]", 1
            )
    # unbroken's connection log (one line per connect, hello, start, resume, close)
    cfg["loggers"]["unbroken"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    # asyncio's errors (e.g. "socket.accept() out of system resource", a traceback
    # per failed accept) through the same handler, so the flood filter sees them
    cfg["loggers"]["asyncio"] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
    if flood_burst > 0:
        cfg.setdefault("filters", {})["flood"] = {
            "()": "unbroken.server.logfilter.FloodFilter",
            "burst": flood_burst,
            "interval": 10.0,
        }
        for handler in cfg["handlers"].values():
            handler.setdefault("filters", []).append("flood")
    return cfg


def serve_command(
    target: Annotated[
        str,
        typer.Argument(
            help="module:attribute naming an Unbroken app (served with app.asgi()) "
            "or any ASGI app, e.g. examples.agent_app:app."
        ),
    ],
    host: Annotated[str, typer.Option(help="Bind socket to this host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Bind socket to this port (0: any free port).")] = 8000,
    path: Annotated[
        str, typer.Option(help="WebSocket path, when the target is an Unbroken app.")
    ] = "/ws",
    app_dir: Annotated[
        str, typer.Option("--app-dir", help="Look for the module in this directory.")
    ] = ".",
    ws_max_size: Annotated[
        int | None,
        typer.Option(
            "--ws-max-size",
            help="Largest WebSocket message accepted, in bytes (default: an Unbroken "
            "app's max_client_frame, 1 MiB; 16 MiB for any other ASGI app).",
        ),
    ] = None,
    ws_ping_interval: Annotated[
        float, typer.Option("--ws-ping-interval", help="Protocol ping interval, seconds.")
    ] = 20.0,
    ws_ping_timeout: Annotated[
        float, typer.Option("--ws-ping-timeout", help="Protocol ping timeout, seconds.")
    ] = 20.0,
    ws_per_message_deflate: Annotated[
        bool,
        typer.Option(
            "--ws-per-message-deflate/--no-ws-per-message-deflate",
            help="permessage-deflate (off by default, unlike uvicorn).",
        ),
    ] = False,
    ws: Annotated[
        str,
        typer.Option(
            "--ws",
            help="uvicorn WebSocket implementation (websockets-sansio: unbroken's layer, "
            "with the small pre-hello message limit and a clean 1007 on bad UTF-8).",
        ),
    ] = "websockets-sansio",
    loop: Annotated[
        str,
        typer.Option(
            "--loop",
            help="Event loop: auto (uvloop if installed, else asyncio), uvloop (fail if "
            "not installed: pip install 'unbroken\\[server]'), asyncio.",
        ),
    ] = "auto",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Worker processes on the port (SO_REUSEPORT; one per core). Above 1 the "
            "app must keep streams in a store all workers see (RedisStore). A worker that "
            "dies is reported and replaced; SIGTERM drains them all.",
        ),
    ] = 1,
    timeout_graceful_shutdown: Annotated[
        int | None,
        typer.Option(
            "--timeout-graceful-shutdown",
            help="Seconds running agents get to finish on shutdown before they end "
            "'failed: shutdown' (default: the app's shutdown_grace, 10 s). "
            "Connections are closed with 1012 at once. For another ASGI app, "
            "uvicorn's meaning: how long to wait for its connections.",
        ),
    ] = None,
    leftover_grace: Annotated[
        float,
        typer.Option(
            "--leftover-grace",
            help="Seconds the tasks still running after the drain get to end once "
            "cancelled; one that swallows its cancel is logged by name and the process "
            "exits without it.",
        ),
    ] = LEFTOVER_GRACE,
    log_level: Annotated[
        str, typer.Option("--log-level", help="critical, error, warning, info, debug.")
    ] = "info",
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            help="Open TCP connections served at once; one more is answered 503 with "
            "Retry-After (default: the app's, else 0.9 x the descriptor limit - 64; the "
            "soft descriptor limit is raised to the hard one at start).",
        ),
    ] = None,
    max_connections_per_ip: Annotated[
        int | None,
        typer.Option(
            "--max-connections-per-ip",
            help="Open connections per client address; one more is answered 429 "
            "(default: no limit; clients behind one proxy share its address).",
        ),
    ] = None,
    handshake_timeout: Annotated[
        float | None,
        typer.Option(
            "--handshake-timeout",
            help="Seconds a connection has to send a complete HTTP request head "
            "(the WebSocket upgrade); then it is closed (default 10).",
        ),
    ] = None,
    backlog: Annotated[
        int, typer.Option("--backlog", help="Listen backlog (connections not yet accepted).")
    ] = 2048,
    log_flood_burst: Annotated[
        int,
        typer.Option(
            "--log-flood-burst",
            help="Identical warnings logged per 10 s before the rest are only counted "
            "(0: log all).",
        ),
    ] = 20,
    health_detail: Annotated[
        bool,
        typer.Option(
            "--health-detail/--no-health-detail",
            help="/healthz shows epoch, runs and connection counts (to anyone who can "
            "reach it; default: the app's setting, off).",
        ),
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help="Origin policy file (TOML: \\[origins] allow, allow_any, same_host; \\[cors] "
            "allow_headers, allow_credentials, max_age); reloaded on SIGHUP and when it "
            "changes, a bad file keeps the policy in force (docs/how-to/origin-policy.md). "
            "Default: the app's policy (browser pages of the server's own host only).",
        ),
    ] = None,
    policy_poll: Annotated[
        float,
        typer.Option(
            "--policy-poll",
            help="Seconds between checks of the --policy file for changes (0: SIGHUP only).",
        ),
    ] = 1.0,
    demo_page: Annotated[
        bool,
        typer.Option(
            "--demo-page",
            help="Also serve a demo page at / (and the browser client at /unbroken.js): "
            "start an agent, watch its parts stream, fault the link and see it resume, "
            "verified. For development: it lists the app's agent names.",
        ),
    ] = False,
    max_runs: Annotated[
        int | None,
        typer.Option(
            "--max-runs",
            help="Agent runs alive at once; a new start above it is answered overloaded "
            "with retry_after_ms (default: the app's, 1000). Streams in flight are never shed.",
        ),
    ] = None,
    max_runs_per_principal: Annotated[
        int | None,
        typer.Option(
            "--max-runs-per-principal",
            help="Agent runs alive at once for one principal (default: the app's, 500).",
        ),
    ] = None,
    max_loop_lag: Annotated[
        float | None,
        typer.Option(
            "--max-loop-lag",
            help="Refuse new runs while the smoothed event-loop lag is above this many "
            "seconds (default: the app's, 0.25).",
        ),
    ] = None,
    max_rss: Annotated[
        int | None,
        typer.Option(
            "--max-rss",
            help="Refuse new runs while the process's resident memory is above this many "
            "bytes (default: the app's, 3/4 of the machine's memory).",
        ),
    ] = None,
    shed_after: Annotated[
        float | None,
        typer.Option(
            "--shed-after",
            help="Once loop lag or memory has stayed over its limit this many seconds, "
            "detach the slowest readers (overloaded + retry_after_ms, close 4008; they "
            "resume exactly, their agents go on) (default: the app's, never).",
        ),
    ] = None,
    adaptive: Annotated[
        bool | None,
        typer.Option(
            "--adaptive/--no-adaptive",
            help="Let each stream's flow window follow its link (coalesce and hold less "
            "in flight on a slow link) or keep it fixed (default: the app's, adaptive).",
        ),
    ] = None,
    protocols: Annotated[
        str | None,
        typer.Option(
            "--protocols",
            help="Wire protocol versions to speak, comma-separated (e.g. v1,v2; default: "
            "the app's, every version): each connection gets the newest its client "
            "offers, a client offering none of them is closed with 4005.",
        ),
    ] = None,
    stall_timeout: Annotated[
        float | None,
        typer.Option(
            "--stall-timeout",
            help="A run whose agent writes nothing for this many seconds ends failed "
            "'stalled' (default: the app's, never).",
        ),
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics/--no-metrics",
            help="Serve Prometheus metrics at /metrics (on by default; "
            "docs/how-to/metrics.md). --no-metrics also stops registering them.",
        ),
    ] = True,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="text (default) or json: one JSON object per line, and one line per "
            "connection event (connect, hello, start, resume, detach, close, refusal).",
        ),
    ] = "text",
) -> None:
    """Serve an unbroken app (or any ASGI app) with uvicorn."""
    import uvicorn

    from ..errors import ConfigError
    from .app import Unbroken
    from .guard import ConnectionLimits, raise_descriptor_limit
    from .policy import OriginPolicy
    from .serving import (
        PolicyWatcher,
        check_workers,
        describe_loop,
        listen_socket,
        resolve_loop,
        uvicorn_config,
        with_limits,
    )
    from .workers import STARTUP_FAILURE, Supervisor

    if log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    if not 0 <= leftover_grace < float("inf"):  # (also refuses nan: an inf wait is none)
        raise typer.BadParameter("seconds, 0 or more, finite", param_hint="--leftover-grace")
    try:
        obj = load_target(target, app_dir)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="TARGET") from None
    uvicorn_grace: int | None = None
    watcher: PolicyWatcher | None = None
    if policy is not None and not isinstance(obj, Unbroken):
        raise typer.BadParameter("--policy needs an Unbroken app as TARGET", param_hint="--policy")
    if demo_page and not isinstance(obj, Unbroken):
        raise typer.BadParameter("--demo-page needs an Unbroken app as TARGET")
    if isinstance(obj, Unbroken):
        try:
            obj.asgi(path)  # checks the app's configuration (auth) before binding
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="TARGET") from None
        if timeout_graceful_shutdown is not None:
            obj.shutdown_grace = float(timeout_graceful_shutdown)
        if health_detail:
            obj.health_detail = True
        if not metrics:
            obj.observe.disable_metrics()
        elif obj.observe.has_metrics and obj.metrics_path is None:
            obj.metrics_path = "/metrics"
        if log_format == "json":
            obj.observe.event_log = True
        if adaptive is not None:
            obj.config = dataclasses.replace(obj.config, adaptive=adaptive)
        if protocols is not None:
            try:
                obj.set_protocols(protocols)
            except ConfigError as exc:
                raise typer.BadParameter(str(exc), param_hint="--protocols") from None
        admission: dict[str, Any] = {
            "max_runs": max_runs,
            "max_runs_per_principal": max_runs_per_principal,
            "max_loop_lag": max_loop_lag,
            "max_rss": max_rss,
            "stall_timeout": stall_timeout,
            "shed_after": shed_after,
        }
        given = {k: v for k, v in admission.items() if v is not None}
        if given:
            try:
                obj.hub.set_admission(dataclasses.replace(obj.hub.admission, **given))
            except ConfigError as exc:
                raise typer.BadParameter(str(exc)) from None
        if policy is not None:
            try:
                loaded = OriginPolicy.from_toml(policy)
            except ConfigError as exc:
                raise typer.BadParameter(str(exc), param_hint="--policy") from None
            watcher = PolicyWatcher(obj.policy, policy, interval=policy_poll or 1e9)
        base_limits = obj.connection_limits
        url = f"ws://{host}:{{port}}{path}"
    elif callable(obj):
        url = f"http://{host}:{{port}}"
        uvicorn_grace = timeout_graceful_shutdown
        base_limits = ConnectionLimits()
    else:
        raise typer.BadParameter(
            f"{target} is a {type(obj).__name__}, not an Unbroken app or an ASGI app",
            param_hint="TARGET",
        )

    try:
        resolved_loop = resolve_loop(loop)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--loop") from None
    try:
        check_workers(obj, workers)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--workers") from None
    try:
        limits = with_limits(
            base_limits,
            max_connections=max_connections,
            max_per_ip=max_connections_per_ip,
            handshake_timeout=handshake_timeout,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    nofile_before, nofile = raise_descriptor_limit()
    try:
        # with workers, this socket only holds the port (and resolves --port 0):
        # each worker binds its own to it with SO_REUSEPORT and listens on that
        held = listen_socket(host, port, reuse_port=workers > 1)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
    bound = held.getsockname()[1]

    def serve_on(sock: socket.socket, tag: str) -> int:
        """Serve on ``sock`` (bound) until drained; the process's exit code."""
        config, guard = uvicorn_config(
            obj,
            path=path,
            ws_max_size=ws_max_size,
            limits=limits,
            ws_ping_interval=ws_ping_interval,
            ws_ping_timeout=ws_ping_timeout,
            ws_per_message_deflate=ws_per_message_deflate,
            ws=ws,
            loop=resolved_loop,
            lifespan="on",
            backlog=backlog,
            log_config=_log_config(log_level, log_flood_burst, tag, log_format),
            log_level=log_level,
            # an Unbroken app closes connections with 1012 at once and drains its runs itself
            timeout_graceful_shutdown=uvicorn_grace,
        )
        if watcher is not None:  # (logged now that uvicorn configured the log)
            watcher.policy.source = Path(watcher.path)
            watcher.policy.set(loaded, why=f"loaded from {watcher.path}")
        sock.listen(config.backlog)
        ulog = logging.getLogger("unbroken")
        if demo_page:
            from .demo_page import DemoPage

            page = DemoPage(
                cast(Any, config.app),
                ws_path=path,
                agents=obj.agents,
                auth=not obj.allow_anonymous,
            )
            config.app = page
        server = uvicorn.Server(config)
        ulog.info("serving %s on %s", target, url.format(port=bound))
        if demo_page:
            ulog.info("demo page: http://%s:%d/", host, bound)
            if not page.bundle.exists():
                ulog.warning(
                    "the demo page needs the browser client, not built: %s "
                    "(./dev setup, or: cd js && npm ci && npm run build)",
                    page.bundle,
                )
        ulog.info(
            "limits: descriptors=%d%s max_connections=%d backlog=%d handshake_timeout=%.1fs",
            nofile,
            f" (raised from {nofile_before})" if nofile != nofile_before else "",
            guard.max_connections,
            config.backlog,
            limits.handshake_timeout,
        )
        # uvicorn handles SIGINT/SIGTERM (graceful shutdown) and re-raises the signal
        # once done; with these no-op handlers underneath, a clean drain exits 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _s, _f: None)

        async def main() -> None:
            # uvicorn's Server.run, plus the policy watcher on the same loop
            ulog.info("event loop: %s", describe_loop(asyncio.get_running_loop()))
            task = asyncio.get_running_loop().create_task(watcher.run()) if watcher else None
            summed = obj.observe.workers if isinstance(obj, Unbroken) else None
            if summed is not None:  # this worker's figures, for the others' scrapes
                await summed.start()
            try:
                await server.serve(sockets=[sock])
            finally:
                if summed is not None:
                    await summed.stop()
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(main())
            code = 0 if server.started else STARTUP_FAILURE
            # asyncio.Runner's close cancels what is left and waits without a bound:
            # a task that swallows its cancel would keep this process (and, with
            # workers, the port) alive forever. Bounded here; past it, exit anyway.
            stuck = runner.run(_end_tasks(leftover_grace))
            if stuck:
                ulog.error(
                    "shutdown: %d task(s) did not end %gs after being cancelled, "
                    "exiting without them: %s",
                    len(stuck),
                    leftover_grace,
                    "; ".join(stuck),
                )
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        return code

    if workers == 1:
        code = serve_on(held, "")
        if code:
            raise typer.Exit(code)
        return

    # one /metrics for all workers: each answers its siblings' scrapes over a Unix
    # socket in a directory of this serve's own (fresh now, removed at exit)
    metrics_dir: str | None = None
    if isinstance(obj, Unbroken) and obj.observe.has_metrics:
        metrics_dir = tempfile.mkdtemp(prefix="unbroken-metrics-")

    def work(index: int) -> int:
        held.close()
        if metrics_dir is not None and isinstance(obj, Unbroken):
            from ..observe.workers import WorkerMetrics

            assert obj.observe.registry is not None
            obj.observe.workers = WorkerMetrics(metrics_dir, index, obj.observe.registry)
        sock = listen_socket(host, bound, reuse_port=True)
        return serve_on(sock, f"w{index} pid={os.getpid()}")

    def reaped(pid: int) -> None:
        if metrics_dir is not None:
            from ..observe.workers import retire

            retire(metrics_dir, pid)

    logging.config.dictConfig(
        _log_config(log_level, log_flood_burst, f"main pid={os.getpid()}", log_format)
    )
    logging.getLogger("unbroken").info(
        "serving %s on %s with %d workers (SO_REUSEPORT, event loop %s)",
        target,
        url.format(port=bound),
        workers,
        resolved_loop,
    )
    try:
        code = Supervisor(workers, work, on_reap=reaped).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    held.close()
    if code:
        raise typer.Exit(code)


# --- the lean path: ``unbroken serve`` without Typer (nor pydantic, Rich, the chaos tools)


def _lean_option(*decls: str, **kwargs: Any) -> dict[str, Any]:
    return {"decls": decls, **kwargs}


def _click_command() -> Any:
    """``serve_command`` as a click command, read from its Typer annotations."""
    import inspect
    import types

    import click

    stub = SimpleNamespace(Option=_lean_option, Argument=_lean_option)
    hints = __import__("typing").get_type_hints(
        serve_command, globalns={**globals(), "typer": stub}, include_extras=True
    )
    params: list[click.Parameter] = []
    for name, parameter in inspect.signature(serve_command).parameters.items():
        hint = hints[name]
        kind, info = hint.__origin__, dict(hint.__metadata__[0])
        if isinstance(kind, types.UnionType):  # X | None
            kind = next(a for a in kind.__args__ if a is not type(None))
        decls = list(info.pop("decls"))
        help_text = info.pop("help", None)
        if parameter.default is inspect.Parameter.empty:
            params.append(click.Argument([name], type=kind, required=True))
            continue
        if not decls:
            flag = "--" + name.replace("_", "-")
            decls = [f"{flag}/--no-{name.replace('_', '-')}" if kind is bool else flag]
        params.append(
            click.Option(
                [*decls, name],
                type=None if kind is bool else kind,
                default=parameter.default,
                is_flag=kind is bool or None,
                help=help_text,
            )
        )
    return click.Command("serve", params=params, callback=serve_command)


def lean_main(args: list[str]) -> None:
    """Run ``unbroken serve ARGS`` without Typer, then exit (:class:`SystemExit`).
    Returns on a usage error (bad option, bad target), without a word: the caller
    runs the full command line, which reports it as it always has."""
    import click

    globals()["typer"] = SimpleNamespace(
        BadParameter=click.BadParameter, Exit=click.exceptions.Exit, echo=click.echo
    )
    command = _click_command()
    try:
        ctx = command.make_context("unbroken serve", list(args))
        with ctx:
            command.invoke(ctx)
    except click.UsageError:
        return  # the full command line says what is wrong, as before
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(0)
