"""``python -m unbroken`` and the ``unbroken`` command: the command line lives in
:mod:`unbroken.cli` (Typer); without the extra that brings Typer this says which one
to install instead of printing a traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from .errors import MissingExtra

#: printed when the command line cannot load (no Typer: a client-only install)
ADVICE = (
    "unbroken: the command line needs an extra ({missing} is not installed): "
    "pip install 'unbroken[chaos]' for every command (chaos, proxy, demo, serve), "
    "or 'unbroken[server]' for unbroken serve alone\n"
)


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["serve"] and "--help" not in sys.argv[2:]:
        # a serving process without Typer, pydantic, Rich nor the chaos tools; it
        # exits, but for a usage error, which the full command line reports below
        with _advice():
            from .server.cli import lean_main
        lean_main(sys.argv[2:])
    with _advice():
        from .cli import main as run
    run()


@contextlib.contextmanager
def _advice() -> Iterator[None]:
    """Imports of the command line: a missing extra is named, not a traceback."""
    from ._extras import EXTRA_OF

    try:
        yield
    except MissingExtra as exc:
        sys.stderr.write(ADVICE.format(missing=exc.missing))
        raise SystemExit(1) from None
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in EXTRA_OF:
            raise
        sys.stderr.write(ADVICE.format(missing=top))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
