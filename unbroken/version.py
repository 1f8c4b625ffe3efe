"""The installed version of unbroken, read once from the package metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("unbroken")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
