"""The docs a user reads speak the user's words: "the seed" (the project's founding test
plan) is an internal word; a user reads "the reliability plan". A random seed (``--seed``,
``seed=``, the digest chain's seed) is a word users know and stays."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the plan meant by "seed": "the seed's …", "seed scenario/target/condition", "the seed asks"
INTERNAL = re.compile(
    r"\bthe seed's\b|\bseed (?:scenarios?|targets?|conditions?)\b|\bthe seed (?:is|asks)\b", re.I
)


def test_no_user_doc_calls_the_reliability_plan_the_seed() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [
        f"{page.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
        for page in pages
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert found == []
