"""The README's main command, small and fast: three cuts, exact answer."""

from __future__ import annotations

import io

from rich.console import Console

from unbroken.demo import print_verdict, run_demo


async def test_demo_recovers_from_fin_rst_and_blackhole_and_is_exact() -> None:
    console = Console(file=io.StringIO(), width=100)
    result = await run_demo(size=120_000, seconds=1.5, seed=3, console=console)
    assert [c.mode for c in result.cuts] == ["fin", "rst", "blackhole"]
    assert all(c.detected is not None and c.resumed is not None for c in result.cuts)
    assert result.digest == result.expected_digest
    assert result.parts_ok and all(result.parts_ok.values())
    assert result.exact
    print_verdict(result, console)
    assert "EXACT" in console.file.getvalue()  # type: ignore[attr-defined]
