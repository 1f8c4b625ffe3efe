"""Which optional extra brings which third-party module.

A client-only install (``pip install unbroken``) has msgspec, websockets and jsonschema;
the server, the chaos toolkit and the command line come with extras. A feature used
without its extra raises :class:`~unbroken.errors.MissingExtra`, which names the extra.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from .errors import MissingExtra

#: top-level module → the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF: Final[dict[str, str]] = {
    "starlette": "server",
    "uvicorn": "server",
    "uvloop": "server",
    "psutil": "server",
    "jwt": "server",
    "cryptography": "server",
    "prometheus_client": "server",
    "typer": "chaos",
    "click": "server",
    "rich": "chaos",
    "redis": "redis",
    "fastapi": "fastapi",
    "matplotlib": "report",
    "httpx": "http",
    "openai": "openai",
    "anthropic": "anthropic",
    "pydantic_ai": "pydantic-ai",
    "langgraph": "langgraph",
    "langchain_core": "langgraph",
}


def require(feature: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` for the first of ``modules`` that is not installed
    (found without importing it)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(feature, EXTRA_OF.get(module, "all"), module)


def as_missing_extra(feature: str, exc: ModuleNotFoundError) -> MissingExtra | None:
    """``exc`` as a :class:`MissingExtra` when the module it missed comes with an extra
    (``None`` for any other missing module: a real bug, to be raised as is)."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return MissingExtra(feature, extra, top)
