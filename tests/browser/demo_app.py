"""The app ``tests/browser/test_demo_page.py`` serves with ``unbroken serve
--demo-page``: the browser tests' ``mixed`` agent (text, a JSON part, a data part)."""

from __future__ import annotations

from .conftest import mixed_app

app = mixed_app({})
