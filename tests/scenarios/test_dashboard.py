"""``chaos run --dashboard``: a real headless chromium (Debian's, through Playwright's
``executable_path``) loads the live page during a small real chaos run and sees it
change: the progress, the exact runs, the recovery histogram, the fault being played;
a failed run's debug bundle opens with one click. The screenshot is kept in the run's
output folder (``dashboard.png``)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from unbroken.scenarios import context
from unbroken.scenarios.browser import CHROMIUM, launch
from unbroken.scenarios.cases import case_for
from unbroken.scenarios.catalog import quick_matrix
from unbroken.scenarios.context import RunState
from unbroken.scenarios.dashboard import Dashboard
from unbroken.scenarios.run_result import Check, RunResult
from unbroken.scenarios.runner import run_matrix


def _no_browser() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (./dev setup installs Debian's chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed (pip install -e '.[dev]')"
    return None


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_the_page_follows_a_real_run_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = _no_browser()
    if why is not None:
        pytest.skip(why)
    # the second run fails a check seeded for it (its artefacts are then kept)
    tc1 = type(case_for("TC1"))
    own = tc1.checks

    async def checks(self: Any, run: RunState, result: RunResult) -> list[Check]:
        found = await own(self, run, result)
        if run.spec.timing == "early":
            found.append(Check("a check seeded to fail", False, "on purpose"))
        return found

    monkeypatch.setattr(tc1, "checks", checks)
    ids = ("TC1-small-mid-clean-rst-r0", "TC1-small-early-gradual-fin-r0")
    specs = [s for s in quick_matrix() if s.id in ids]
    assert len(specs) == 2
    out = tmp_path / "out"
    board = Dashboard(specs, tier="quick", out=out)
    async with board.serving() as url, launch() as browser:
        page = await browser.new_page(viewport={"width": 1100, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # everything the page shows while the run goes, as it changed
        await page.add_init_script(
            "window.__seen = {faults: [], progress: []};"
            "new MutationObserver(() => {"
            " const f = document.getElementById('fault'), p = document.getElementById('progress');"
            " if (f && f.textContent !== '—') window.__seen.faults.push(f.textContent);"
            " if (p) window.__seen.progress.push(p.textContent);"
            "}).observe(document, {subtree: true, childList: true, characterData: true});"
        )
        await page.goto(url)
        await page.wait_for_function("document.getElementById('state').textContent === 'live'")
        assert await page.text_content("#progress") == "0/2"
        assert await page.text_content("#scenarios tbody tr td:nth-child(2)") == "0/2"

        context.fault_listeners.append(board.fault)

        def on_progress(spec: Any, result: Any) -> None:
            if result is None:
                board.started(spec)
            else:
                board.done(result)

        try:
            running = asyncio.ensure_future(run_matrix(specs, out_dir=out, on_progress=on_progress))
            # the page changes while the run goes: one run done, then both
            await page.wait_for_function(
                "document.getElementById('progress').dataset.done === '1'", timeout=120_000
            )
            results, _, _ = await running
        finally:
            context.fault_listeners.remove(board.fault)
        board.finished(all(r.passed for r in results))
        await page.wait_for_function(
            "document.getElementById('state').textContent.startsWith('finished')"
        )
        assert await page.text_content("#progress") == "2/2"
        assert [r.status for r in results] == ["pass", "fail"]
        exact = sum(1 for r in results if r.exact and r.passed)
        assert await page.text_content("#exact") == str(exact)
        assert await page.text_content("#failed") == str(sum(1 for r in results if r.failed))
        # the recovery histogram grew by every stream's recovery
        counts = await page.eval_on_selector_all(
            "#hist > div", "cols => cols.map(c => Number(c.dataset.count))"
        )
        recoveries = sum(1 for r in results if r.metrics.recovery_s is not None)
        assert sum(counts) == recoveries >= 1
        seen = await page.evaluate("window.__seen")
        # the fault being played was shown while it ran
        assert any("clean disconnect" in f or "cut" in f for f in seen["faults"]), seen
        assert "1/2" in seen["progress"]

        # the failed run's debug bundle, one click away (the passed one kept none)
        assert await page.locator(f"#failures tr[data-run='{results[0].id}']").count() == 0
        failed = results[1].id
        row = await page.text_content(f"#failures tr[data-run='{failed}']")
        assert row is not None and "a check seeded to fail" in row
        await page.click(f"#failures tr[data-run='{failed}'] button")
        await page.wait_for_selector(f"#bundle[data-run='{failed}'] #breakdown")
        assert "EVENT" in (await page.text_content("#client-log") or "")
        assert '"src"' in (await page.text_content("#sequence") or "")
        assert "log_at_cut" in (await page.text_content("#snapshot") or "")
        breakdown = await page.text_content("#breakdown")
        assert breakdown is not None and "reconnect" in breakdown and "resume" in breakdown
        await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        assert not errors, errors

        status, missing = await asyncio.to_thread(_get, f"{url}bundle/no-such-run")
        assert status == 404 and "no debug bundle" in missing["error"]
    assert (out / "dashboard.png").stat().st_size > 10_000


async def test_a_busy_port_is_an_error_the_run_can_report(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        board = Dashboard([], tier="quick", out=tmp_path, port=busy.getsockname()[1])
        with pytest.raises(OSError):
            async with board.serving():
                pass
    finally:
        busy.close()
    assert board.bundle("nothing") is None
    assert [e["type"] for e in board.events] == ["plan"]
