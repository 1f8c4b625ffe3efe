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
    from . import __version__

    typer.echo(__version__)


# --- subcommands registered by their own modules (one line each) ---
from .chaos.cli import proxy_command  # noqa: E402

app.command("proxy")(proxy_command)
app.command("serve")(__import__("unbroken.server.cli", fromlist=["x"]).serve_command)


def main() -> None:
    """Console-script entry point."""
    app()
