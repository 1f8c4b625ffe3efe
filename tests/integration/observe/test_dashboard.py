"""The Grafana dashboard (docs/grafana/unbroken.json) and the metrics list in
docs/how-to/metrics.md name only metrics the server exports, and every exported
metric is on both."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from unbroken.observe import RedisCounts
from unbroken.observe.metrics import METRICS
from unbroken.server import Unbroken
from unbroken.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[3]
NAME = re.compile(r"\bunbroken_[a-z_]+")


class RedisLike(MemoryStore):
    """A log with the Redis store's counters (the Redis figures appear only then)."""

    def __init__(self) -> None:
        super().__init__()
        self.redis_counts = RedisCounts()


def _base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name)


def test_the_dashboard_and_the_docs_name_exactly_the_exported_metrics() -> None:
    exported = {f"unbroken_{name}" for name, _kind, _help in METRICS}
    dashboard = json.loads((ROOT / "docs/grafana/unbroken.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    in_dashboard = {_base(n) for e in exprs for n in NAME.findall(e)}
    assert in_dashboard - exported == set()
    assert exported - in_dashboard == set()
    doc = (ROOT / "docs/how-to/metrics.md").read_text()
    in_doc = {_base(n) for n in NAME.findall(doc)}
    assert exported - in_doc == set()
    assert in_doc - exported == set()


def test_a_fresh_app_exports_every_listed_metric() -> None:
    app = Unbroken(RedisLike(), allow_anonymous=True)
    assert app.observe.registry is not None
    text = generate_latest(app.observe.registry).decode()
    names = {_base(n.removesuffix("_created")) for n in NAME.findall(text)}
    assert names == {f"unbroken_{name}" for name, _kind, _help in METRICS}
