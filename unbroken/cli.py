"""The ``unbroken`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer


def _typer() -> typer.Typer:
    return typer.Typer(
        name="unbroken",
        help="Streamed AI-agent answers that survive the network.",
        no_args_is_help=True,
        add_completion=False,
    )


app = _typer()


@app.callback()
def _root() -> None:
    """Streamed AI-agent answers that survive the network."""


def version() -> None:
    """Print the installed version."""
    from .version import __version__

    typer.echo(__version__)


def demo(
    size: int = typer.Option(1_000_000, help="Bytes of answer to stream."),
    seconds: float = typer.Option(6.0, help="How long the agent takes to write it."),
    seed: int = typer.Option(
        7, help="Random seed of the generated answer (the same number, the same answer)."
    ),
) -> None:
    """Stream a multi-part answer through a proxy that cuts it three times (FIN, RST,
    blackhole); exits 0 only if the client ends with exactly the right bytes."""
    import asyncio

    from rich.console import Console

    from .demo import print_verdict, run_demo

    console = Console()
    result = asyncio.run(run_demo(size=size, seconds=seconds, seed=seed, console=console))
    print_verdict(result, console)
    raise typer.Exit(0 if result.exact else 1)


# --- subcommands registered by their own modules (one line each) ---
from .chaos.cli import proxy_command  # noqa: E402
from .scenarios.cli import chaos_app  # noqa: E402
from .server.cli import use_typer  # noqa: E402

serve_command = use_typer()

#: the commands besides ``chaos`` (``chaos`` is added to :data:`app` below)
_COMMANDS: dict[str, Callable[..., None]] = {
    "version": version,
    "demo": demo,
    "proxy": proxy_command,
    "serve": serve_command,
}
for _name, _command in _COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(chaos_app, name="chaos")


def _without_chaos() -> typer.Typer:
    """The command line without the ``chaos`` group, for a command that is not in it.

    Typer builds every command's options when it runs, and the ``chaos`` options'
    help names the scenario catalog's conditions and counts its runs: that imports
    every scenario (the client, the harness, PyJWT, cryptography, psutil), ~12 MB
    of RSS that ``unbroken serve`` would keep for its whole life in every worker."""
    lean = _typer()
    lean.callback()(_root)
    for name, command in _COMMANDS.items():
        lean.command(name)(command)
    return lean


def main() -> None:
    """Console-script entry point."""
    if len(sys.argv) > 1 and sys.argv[1] in _COMMANDS:
        _without_chaos()()
    else:
        app()
