"""One module per scenario (``tc1.py`` ... ``tc15.py``), each a :class:`Case`: its
answers, pacing, faults and checks. The generic runner finds a scenario's case here by
its catalog id (:func:`case_for`).

A new scenario is a new module ``tcN.py`` defining ``CASE = TCN()`` (a :class:`Case`
subclass with ``id = "TCN"``, its answers, faults, checks and its rows of the tiers'
matrices) and its name on the import line below. Nothing else changes: the catalog
finds it here, lists the scenario as covered and puts its rows in the matrices. A case
from outside this package (a plug-in, a test) is added with :func:`register` and taken
out with :func:`unregister`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Final

from ..spec import scenario_order
from . import tc1, tc2, tc3, tc4, tc5, tc6, tc7, tc8, tc9, tc10, tc11, tc12, tc13, tc14, tc15
from .base import Case


def _index(modules: dict[str, object]) -> dict[str, Case]:
    found: dict[str, Case] = {}
    for module in modules.values():
        if not isinstance(module, ModuleType):
            continue
        case = getattr(module, "CASE", None)
        if isinstance(case, Case):
            if case.id in found:
                raise RuntimeError(f"two cases for {case.id}: {module.__name__} and another")
            found[case.id] = case
    return dict(sorted(found.items(), key=lambda kv: scenario_order(kv[0])))


#: Every case, by scenario id: the modules imported above.
CASES: Final[dict[str, Case]] = _index(globals())


def _sort() -> None:
    ordered = sorted(CASES.items(), key=lambda kv: scenario_order(kv[0]))
    CASES.clear()
    CASES.update(ordered)


def register(case: Case) -> Case:
    """Add ``case`` to :data:`CASES` (its scenario then counts as covered and its rows
    join the matrices); returns it."""
    if case.id in CASES:
        raise ValueError(f"{case.id} has a case already: {type(CASES[case.id]).__name__}")
    CASES[case.id] = case
    _sort()
    return case


def unregister(scenario: str) -> Case:
    """Take scenario ``scenario``'s case out of :data:`CASES`; returns it."""
    return CASES.pop(scenario)


def case_for(scenario: str) -> Case:
    """The case of scenario ``scenario`` (``"TC3"``)."""
    try:
        return CASES[scenario]
    except KeyError:
        raise LookupError(f"no case for scenario {scenario!r}: known {', '.join(CASES)}") from None


__all__ = [
    "CASES",
    "Case",
    "case_for",
    "register",
    "tc1",
    "tc2",
    "tc3",
    "tc4",
    "tc5",
    "tc6",
    "tc7",
    "tc8",
    "tc9",
    "tc10",
    "tc11",
    "tc12",
    "tc13",
    "tc14",
    "tc15",
    "unregister",
]
