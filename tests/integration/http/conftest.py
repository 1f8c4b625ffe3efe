"""Fixtures: the server test app (its agents), served on a real loopback socket, read over
HTTP: the server suite's ``served`` fixture, the same one."""

from __future__ import annotations

from ..server.conftest import Kit, ServeKit, make_kit, served

__all__ = ["Kit", "ServeKit", "make_kit", "served"]
