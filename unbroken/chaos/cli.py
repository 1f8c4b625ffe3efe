"""``unbroken proxy``: run a fault proxy from the command line.

Registered in :mod:`unbroken.cli`. Heavy imports happen inside the command so ``unbroken
--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer


def proxy_command(
    upstream: Annotated[str, typer.Option(help="HOST:PORT of the server to forward to.")],
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to accept clients on (port 0: any free port).")
    ] = "127.0.0.1:0",
    api: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT for the Toxiproxy-compatible HTTP control API "
            "(Toxiproxy uses 127.0.0.1:8474). Off when not given."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Proxy name, as seen by the HTTP API.")] = "unbroken",
    fault_log: Annotated[
        Path | None, typer.Option(help="Append one JSON line per fault to this file.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Random seed for jitter, slicing and toxicity rolls (same number, same rolls)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not print faults to stderr.")] = False,
) -> None:
    """Run a fault-injecting TCP proxy (drive it with --api and any Toxiproxy client)."""
    from ..errors import ConfigError
    from .proxy import parse_address

    try:
        listen_address = parse_address(listen)
        upstream_address = parse_address(upstream)
        api_address = parse_address(api) if api else None
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        asyncio.run(_serve(listen_address, upstream_address, api_address, name, fault_log, seed))
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


async def _serve(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    api: tuple[str, int] | None,
    name: str,
    fault_log: Path | None,
    seed: int | None,
) -> None:
    from .control import ControlServer, ProxyRegistry
    from .proxy import FaultProxy

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = ProxyRegistry(fault_log=fault_log, seed=seed)
    proxy = FaultProxy(upstream=upstream, listen=listen, name=name, fault_log=fault_log, seed=seed)
    await proxy.start()
    registry.add(proxy)
    control: ControlServer | None = None
    try:
        typer.echo(f"proxy {name}: listening on {proxy.listen} -> upstream {proxy.upstream}")
        if api is not None:
            control = ControlServer(registry, host=api[0], port=api[1])
            await control.start()
            typer.echo(f"control API (Toxiproxy-compatible): {control.url}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        if control is not None:
            await control.stop()
        await registry.close()
