"""Imported first by :mod:`unbroken.server`: without the ``server`` extra, importing the
server raises :class:`~unbroken.errors.MissingExtra` naming it, not a bare
``ModuleNotFoundError`` for Starlette."""

from __future__ import annotations

from .._extras import require

require("the unbroken server", "starlette", "uvicorn", "prometheus_client")
