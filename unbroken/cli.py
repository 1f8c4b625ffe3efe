"""The ``unbroken`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="unbroken",
    help="Streamed AI-agent answers that survive the network.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Streamed AI-agent answers that survive the network."""


@app.command()
def version() -> None:
    """Print the installed version."""
    from .version import __version__

    typer.echo(__version__)


@app.command()
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
from .server.cli import serve_command  # noqa: E402

app.command("proxy")(proxy_command)
app.command("serve")(serve_command)
app.add_typer(chaos_app, name="chaos")


def main() -> None:
    """Console-script entry point."""
    app()
