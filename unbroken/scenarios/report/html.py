"""``report.html``: one self-contained page (inline CSS and SVG charts) built from a
:class:`~unbroken.scenarios.results.Results`."""

from __future__ import annotations

import html
from collections import Counter, defaultdict

from ..catalog import SCENARIOS, TC8_CUTS, TIMINGS, scenario_order
from ..results import Results, RunResult, pooled_samples
from ..targets import Evaluation, evaluate, percentile
from . import charts
from .regression import Comparison, regressions

ARTEFACT_FILES = (
    "client.log",
    "server.log",
    "proxy-faults.jsonl",
    "sequence.jsonl",
    "snapshot.json",
    "timing.json",
    "verdicts.json",
)

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#f4f5f7}
main{max-width:1360px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:17px;margin:30px 0 8px;border-bottom:1px solid #d8dbe0;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.sub{color:#5b6475;font-size:13px}
.banner{border-radius:10px;padding:18px 24px;margin:16px 0 8px;color:#fff;display:flex;
align-items:center;gap:28px;flex-wrap:wrap}
.banner.pass{background:#1e7a46}.banner.fail{background:#b3261e}
.banner .big{font-size:30px;font-weight:800;letter-spacing:.5px}
.banner .facts{display:flex;gap:26px;flex-wrap:wrap}
.banner .fact b{display:block;font-size:22px}.banner .fact span{font-size:12px;opacity:.9}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:6px;overflow:hidden;
box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:6px 9px;text-align:left;border-bottom:1px solid #eceef1;vertical-align:top}
th{background:#eef0f3;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.3px;
color:#465063}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:700;
white-space:nowrap}
.ok{background:#d7f2e1;color:#14532d}.bad{background:#fbd9d6;color:#8a1c14}
.na{background:#e5e7eb;color:#4b5563}.warn{background:#fdf0c8;color:#7a5a00}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.card{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.card.wide{grid-column:1 / -1}
.card svg{width:100%;height:auto}
.caption{font-size:12px;color:#5b6475;margin:4px 2px 0}
.cell{text-align:center;font-variant-numeric:tabular-nums;font-size:12px}
.c-ok{background:#e3f5ea}.c-bad{background:#f9d4d0;font-weight:700}.c-none{background:#f7f7f8;
color:#aaa}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#1d2330;color:#e7e9ee;padding:10px 12px;border-radius:6px;overflow:auto}
details{margin-top:8px} summary{cursor:pointer;font-weight:600}
.small{font-size:12px;color:#5b6475}
a{color:#1f5fbf}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _not_covered() -> str:
    """The header's note on the scenarios without a case (``"; TC10–TC15 not yet
    covered"``, a range when their numbers follow on), or ``""``."""
    ids = [s.id for s in SCENARIOS if not s.covered]
    if not ids:
        return ""
    numbers = [scenario_order(i) for i in ids]
    consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    named = f"{ids[0]}–{ids[-1]}" if consecutive and len(ids) > 1 else ", ".join(ids)
    return f"; {named} not yet covered"


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


def _bytes(v: float | None) -> str:
    if v is None:
        return "—"
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def _badge(ok: bool | None, yes: str = "met", no: str = "missed", none: str = "no data") -> str:
    if ok is None:
        return f'<span class="badge na">{_e(none)}</span>'
    return f'<span class="badge {"ok" if ok else "bad"}">{_e(yes if ok else no)}</span>'


def _counts(e: Evaluation, strict: bool) -> bool:
    """Whether a miss of ``e`` fails the run (informational targets: only when strict)."""
    return strict or not e.target.informational


def _verdict(
    results: Results, evals: list[Evaluation], regs: list[Comparison], strict: bool = False
) -> tuple[bool, str]:
    runs = results.runs
    bad = [r for r in runs if r.failed]
    skipped = [r for r in runs if r.skipped]
    missed = [e for e in evals if e.met is False and _counts(e, strict)]
    noted = [e for e in evals if e.met is False and not _counts(e, strict)]
    ok = (
        bool(runs)
        and len(skipped) < len(runs)
        and not bad
        and not missed
        and not regs
        and not results.interrupted
    )
    parts = []
    if bad:
        parts.append(f"{len(bad)} of {len(runs)} runs failed")
    if missed:
        parts.append(f"{len(missed)} target{'s' if len(missed) > 1 else ''} missed")
    if regs:
        parts.append(f"{len(regs)} regression{'s' if len(regs) > 1 else ''}")
    if results.interrupted:
        parts.append("interrupted")
    if ok:
        text = "PASS — every run exact, every measured target met"
        if noted:
            text = (
                "PASS — every run exact; informational: "
                + ", ".join(e.target.label for e in noted)
                + " missed"
            )
        if skipped:
            text += f"; {len(skipped)} skipped ({skipped[0].error})"
        return True, text
    return False, "FAIL — " + ", ".join(parts or ["no runs"])


def build(
    results: Results,
    comparisons: list[Comparison] | None = None,
    evaluations: list[Evaluation] | None = None,
    *,
    strict_targets: bool = False,
    previous: tuple[str, list[Comparison]] | None = None,
    baseline_name: str = "the baseline",
) -> str:
    """The whole page (``evaluations``: the targets on ``results.runs``, evaluated here
    when not given; ``strict_targets``: a missed informational target fails it too;
    ``previous``: the history's previous run's id and the comparison with it, shown and
    flagged, not failing)."""
    runs = results.runs
    evals = evaluate(runs) if evaluations is None else evaluations
    regs = regressions(comparisons or [])
    ok, headline = _verdict(results, evals, regs, strict_targets)
    streams = sum(r.streams for r in runs)
    exact = sum(r.streams_exact for r in runs)
    met = sum(1 for e in evals if e.met)
    measured = sum(1 for e in evals if e.met is not None)
    failed = [r for r in runs if r.failed]
    scen_run = sorted({r.spec.scenario for r in runs}, key=scenario_order)
    machine = results.machine
    out: list[str] = []
    out.append("<!doctype html><html lang=en><head><meta charset=utf-8>")
    out.append("<meta name=viewport content='width=device-width,initial-scale=1'>")
    out.append(f"<title>unbroken reliability report — {_e(headline)}</title>")
    out.append(f"<style>{CSS}</style></head><body><main>")
    out.append("<h1>unbroken reliability report</h1>")
    out.append(
        f"<div class=sub>{_e(results.tier)} tier · started {_e(results.started)} · "
        f"{results.duration_s / 60:.1f} min on {_e(machine.get('cpus', '?'))} CPUs, "
        f"Python {_e(machine.get('python', '?'))} · scenarios "
        f"{_e(', '.join(scen_run) or 'none')} run{_e(_not_covered())}</div>"
    )
    out.append(
        f"<div class='banner {'pass' if ok else 'fail'}'><div class=big>{_e(headline)}</div>"
    )
    out.append("<div class=facts>")
    for value, label in (
        (
            f"{sum(1 for r in runs if r.passed)}/{sum(1 for r in runs if not r.skipped)}",
            "runs passed",
        ),
        (f"{exact:,}/{streams:,}", "streams exact (digest-verified)"),
        (f"{met}/{measured}", "targets met"),
        (f"{len(regs)}", "regressions" if comparisons is not None else "no baseline given"),
    ):
        out.append(f"<div class=fact><b>{_e(value)}</b><span>{_e(label)}</span></div>")
    out.append("</div></div>")
    if results.service:
        out.append(
            f"<div class=small>against {_e(results.service)}: each scenario's faults played "
            "against your agent; a stream is exact when the client verified its digest chain "
            "and end digest and (unless judged by the chain alone) its events equal the "
            "fault-free run's. The lists under "
            "<i>what must hold</i> are the built-in test app's own checks, not run here.</div>"
        )
    if results.command:
        out.append(f"<div class=small>reproduce: <code>{_e(results.command)}</code></div>")

    # ---- targets
    out.append(
        "<h2>Targets</h2><table><tr><th>target</th><th>asked for</th>"
        "<th>measured</th><th></th><th>how it is measured</th></tr>"
    )
    for e in evals:
        badge = _badge(e.met)
        if e.met is False and not _counts(e, strict_targets):
            badge = "<span class='badge warn'>missed (informational)</span>"
        elif e.target.informational and e.met:
            badge += " <span class='badge na'>informational</span>"
        out.append(
            f"<tr><td><b>{_e(e.target.label)}</b></td><td>{_e(e.target.seed_text)}</td>"
            f"<td class=num><b>{_e(e.shown())}</b></td><td>{badge}</td>"
            f"<td class=small>{_e(e.target.measured_as)}<br>{_e(e.detail)}</td></tr>"
        )
    out.append("</table>")

    # ---- scenarios
    by: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        by[r.spec.scenario].append(r)
    out.append(
        "<h2>Scenarios</h2><table><tr><th>case</th><th>scenario</th><th>runs</th>"
        "<th>exact streams</th><th>recovery p50 / p95</th><th>what must hold</th>"
        "<th>status</th></tr>"
    )
    for s in SCENARIOS:
        rs = by.get(s.id, [])
        if not s.covered:
            out.append(
                f"<tr style='color:#888'><td>{s.id}</td><td>{_e(s.title)}</td><td>—</td>"
                f"<td>—</td><td>—</td><td class=small>needs {_e(s.not_covered_because)}</td>"
                f"<td><span class='badge na'>not yet covered</span></td></tr>"
            )
            continue
        if not rs:
            status = "<span class='badge na'>not run</span>"
        else:
            passed = not any(r.failed for r in rs)
            status = _badge(passed, "passed", f"{sum(1 for r in rs if r.failed)} failed")
            if all(r.skipped for r in rs):
                status = "<span class='badge na'>skipped</span>"
            elif any(r.skipped for r in rs):
                status += f" <span class='badge na'>{sum(r.skipped for r in rs)} skipped</span>"
        st = sum(r.streams for r in rs)
        ex = sum(r.streams_exact for r in rs)
        rec = pooled_samples(rs, "recovery")
        holds = "".join(f"<li>{_e(h)}</li>" for h in s.must_hold)
        out.append(
            f"<tr><td><b>{s.id}</b></td><td>{_e(s.title)}<div class=small>{_e(s.fault_plan)}"
            f"</div></td><td class=num>{len(rs)}</td><td class=num>{ex:,}/{st:,}</td>"
            f"<td class=num>{_ms(percentile(rec, 0.5) if rec else None)} / "
            f"{_ms(percentile(rec, 0.95) if rec else None)}</td>"
            f"<td class=small><ul style='margin:0;padding-left:16px'>{holds}</ul></td>"
            f"<td>{status}</td></tr>"
        )
    out.append("</table>")

    # ---- charts
    out.append("<h2>Charts</h2>")
    unavailable = charts.unavailable()
    if unavailable is not None:
        out.append(
            f"<p class=small>No charts: {_e(unavailable)}, then rebuild this page with "
            "<code>unbroken chaos report results.json</code>.</p>"
        )
    else:
        _charts(out, results)

    # ---- failure patterns
    out.append("<h2>Failure patterns</h2>")
    out.append(_patterns(runs))

    # ---- regressions
    out.append("<h2>Regressions</h2>")
    if comparisons is None:
        out.append(
            "<p class=small>No baseline given (<code>--baseline results.json</code> "
            "compares with an earlier run).</p>"
        )
    else:
        out.append(_regression_table(comparisons, baseline_name))
    if previous is not None:
        prev_id, prev_cmp = previous
        out.append(f"<h3>Against the previous run in the history ({_e(prev_id)})</h3>")
        out.append(_regression_table(prev_cmp, f"the previous run {prev_id}"))
        out.append(
            "<p class=small>Flagged, not failing: <code>--baseline RUN_ID</code> makes a "
            "run the yardstick that fails this one.</p>"
        )

    # ---- failed runs
    out.append(f"<h2>Failed runs ({len(failed)})</h2>")
    if not failed:
        out.append("<p class=small>None. Every run's checks held.</p>")
    else:
        out.append("<table><tr><th>run</th><th>what failed</th><th>debugging artefacts</th></tr>")
        for r in failed:
            why = "".join(
                f"<li><b>{_e(c.name)}</b>: {_e(c.detail)}</li>" for c in r.failed_checks()
            )
            if r.error:
                why += f"<li><b>error</b>: {_e(r.error)}</li>"
            links = (
                " · ".join(f"<a href='{_e(r.artefacts)}/{f}'>{f}</a>" for f in ARTEFACT_FILES)
                if r.artefacts
                else "—"
            )
            out.append(
                f"<tr><td><code>{_e(r.id)}</code></td><td><ul style='margin:0;"
                f"padding-left:16px'>{why}</ul></td><td class=small>{links}</td></tr>"
            )
        out.append("</table>")

    # ---- all runs
    out.append(f"<h2>All runs ({len(runs)})</h2><details><summary>show the table</summary>")
    out.append(
        "<table><tr><th>run</th><th>status</th><th>streams</th><th>detect</th>"
        "<th>reconnect</th><th>resume</th><th>recovery</th><th>vs baseline</th>"
        "<th>re-sent / in flight</th><th>server CPU (base)</th><th>log peak</th><th>notes</th>"
        "</tr>"
    )
    for r in runs:
        m = r.metrics
        link = (
            f"<a href='{_e(r.artefacts)}/timing.json'>{_e(r.id)}</a>" if r.artefacts else _e(r.id)
        )
        notes = "; ".join(n.splitlines()[0] for n in r.notes)[:160]
        badge = _badge(None if r.skipped else r.passed, "pass", r.status, "skipped")
        out.append(
            f"<tr><td><code>{link}</code></td><td>{badge}</td>"
            f"<td class=num>{r.streams_exact}/{r.streams}</td>"
            f"<td class=num>{_ms(m.detection_s)}</td><td class=num>{_ms(m.reconnect_s)}</td>"
            f"<td class=num>{_ms(m.resume_s)}</td><td class=num>{_ms(m.recovery_s)}</td>"
            f"<td class=num>{'—' if m.delay_s is None else f'{m.delay_s:+.2f} s'}</td>"
            f"<td class=num>{_bytes(m.bytes_resent)} / {_bytes(m.bytes_inflight)}</td>"
            f"<td class=num>{'—' if m.server_cpu_s is None else f'{m.server_cpu_s:.2f}'} "
            f"({'—' if m.baseline_cpu_s is None else f'{m.baseline_cpu_s:.2f}'}) s</td>"
            f"<td class=num>{'—' if m.log_peak_mb is None else f'{m.log_peak_mb:.1f} MB'}</td>"
            f"<td class=small>{_e(notes)}</td></tr>"
        )
    out.append("</table></details>")
    out.append(
        "<p class=small>Real server (uvicorn, own thread), real fault proxy, real clients, "
        "over loopback. Times are monotonic clock readings; per-run values are the worst "
        "stream's. See docs/reliability.md.</p>"
    )
    out.append("</main></body></html>")
    return "\n".join(out)


def _patterns(runs: list[RunResult]) -> str:
    timings = [t for t in [*TIMINGS, *TC8_CUTS] if any(r.spec.timing == t for r in runs)]
    cells: dict[tuple[str, str, str], list[RunResult]] = defaultdict(list)
    for r in runs:
        cells[(r.spec.scenario, r.spec.fault, r.spec.timing)].append(r)
    rows = sorted(
        {(r.spec.scenario, r.spec.fault) for r in runs}, key=lambda k: (scenario_order(k[0]), k[1])
    )
    out = ["<table><tr><th>scenario</th><th>fault</th>"]
    out += [f"<th class=cell>{_e(t)}</th>" for t in timings]
    out.append("</tr>")
    for sid, fault in rows:
        out.append(f"<tr><td>{sid}</td><td>{_e(fault)}</td>")
        for t in timings:
            rs = cells.get((sid, fault, t), [])
            if not rs:
                out.append("<td class='cell c-none'>·</td>")
                continue
            bad = sum(1 for r in rs if r.failed)
            cls = "c-bad" if bad else "c-ok"
            text = f"{bad} failed of {len(rs)}" if bad else f"{len(rs)} ok"
            out.append(f"<td class='cell {cls}'>{text}</td>")
        out.append("</tr>")
    out.append("</table>")
    counts: Counter[str] = Counter()
    for r in runs:
        for c in r.failed_checks():
            counts[c.name] += 1
        if r.status == "error":
            counts[f"error: {r.error[:80]}"] += 1
    if counts:
        out.append(
            "<h3>Most frequent failed checks</h3><table><tr><th>check</th><th>runs</th></tr>"
        )
        out += [
            f"<tr><td>{_e(k)}</td><td class=num>{v}</td></tr>" for k, v in counts.most_common(12)
        ]
        out.append("</table>")
    else:
        out.append(
            "<p class=small>No failures: rows are scenario × fault, columns the timing of "
            "the fault; each cell counts runs (all conditions).</p>"
        )
    return "\n".join(out)


def _charts(out: list[str], results: Results) -> None:
    figs = charts.all_charts(results)
    out.append("<div class=grid>")
    out.append(
        f"<div class='card wide'>{figs['recovery']}<div class=caption>Each dot is one stream "
        "(one connection for reconnection); boxes span the middle half. Dashed: the "
        "target. Complete recovery includes the agent still writing the rest of its answer."
        "</div></div>"
    )
    out.append(
        f"<div class=card>{figs['completion']}<div class=caption>A stream counts when it "
        "ended complete and its events and end digest equal a fault-free run's.</div></div>"
    )
    out.append(
        f"<div class=card>{figs['resent']}<div class=caption>Per run: bytes of events the "
        "server sent again after a resume against the bytes that were in flight (sent, not "
        "verified by the client) when the link failed. TC8 bound: in flight + one frame."
        "</div></div>"
    )
    out.append(
        f"<div class='card wide'>{figs['memory']}<div class=caption>Sampled every 50 ms "
        "during the runs. The log holds every event of every stream of the run (the buffer);"
        " RSS is the whole process: server thread, proxy and clients.</div></div>"
    )
    out.append("</div>")


def _regression_table(comparisons: list[Comparison], against: str = "the baseline") -> str:
    regs = [c for c in comparisons if c.regression]
    out = [
        f"<p>{len(regs)} regression{'s' if len(regs) != 1 else ''} against {_e(against)} "
        "(slower by more than 25 % and 100 ms, fewer exact streams, or a target met "
        "before and missed now; CPU overhead up by more than 25 points is informational "
        "unless <code>--strict-targets</code>).</p>"
    ]
    out.append(
        "<table><tr><th>scenario</th><th>metric</th><th>before</th><th>now</th>"
        "<th>change</th><th></th></tr>"
    )
    for c in sorted(comparisons, key=lambda c: (not c.regression, c.scenario)):

        def fmt(v: float | None, unit: str = c.unit) -> str:
            if v is None:
                return "—"
            if unit == "s":
                return _ms(v)
            if unit == "%":
                return f"{v:.2f} %"
            return f"{v:.2f} {unit}"

        out.append(
            f"<tr><td>{_e(c.scenario)}</td><td>{_e(c.metric)}</td><td class=num>{fmt(c.before)}"
            f"</td><td class=num>{fmt(c.after)}</td><td class=num>{_e(c.change())}</td>"
            f"<td>{_badge(not c.regression, 'ok', 'regression')}"
            f"{' <span class=small>' + _e(c.note) + '</span>' if c.note else ''}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)
