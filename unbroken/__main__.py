"""``python -m unbroken`` and the ``unbroken`` command: the command line lives in
:mod:`unbroken.cli` (Typer); without the extra that brings Typer this says which one
to install instead of printing a traceback."""

from __future__ import annotations

import sys

from .errors import MissingExtra

#: printed when the command line cannot load (no Typer: a client-only install)
ADVICE = (
    "unbroken: the command line needs an extra ({missing} is not installed): "
    "pip install 'unbroken[chaos]' for every command (chaos, proxy, demo, serve), "
    "or 'unbroken[server]' for unbroken serve alone\n"
)


def main() -> None:
    """Console-script entry point."""
    from ._extras import EXTRA_OF

    lean = sys.argv[1:2] == ["serve"] and "--help" not in sys.argv[2:]
    try:
        if lean:  # a serving process without Typer, pydantic, Rich nor the chaos tools
            from .server.cli import lean_main as serve
        else:
            from .cli import main as run
    except MissingExtra as exc:
        sys.stderr.write(ADVICE.format(missing=exc.missing))
        raise SystemExit(1) from None
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in EXTRA_OF:
            raise
        sys.stderr.write(ADVICE.format(missing=top))
        raise SystemExit(1) from None
    if lean:
        serve(sys.argv[2:])
    else:
        run()


if __name__ == "__main__":
    main()
