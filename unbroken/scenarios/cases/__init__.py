"""One module per scenario (``tc1.py`` ... ``tc9.py``), each a :class:`Case`: its
answers, pacing, faults and checks. The generic runner finds a scenario's case here by
its catalog id (:func:`case_for`).

A new scenario is a new module ``tcN.py`` defining ``CASE = TCN()`` (a :class:`Case`
subclass with ``id = "TCN"``) and its name on the import line below; the catalog lists
it (``covered=True``) and puts it in the matrices.
"""

from __future__ import annotations

from types import ModuleType
from typing import Final

from . import tc1, tc2, tc3, tc4, tc5, tc6, tc7, tc8, tc9
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
    return dict(sorted(found.items(), key=lambda kv: int(kv[0].removeprefix("TC"))))


#: Every case, by scenario id: the modules imported above.
CASES: Final[dict[str, Case]] = _index(globals())


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
    "tc1",
    "tc2",
    "tc3",
    "tc4",
    "tc5",
    "tc6",
    "tc7",
    "tc8",
    "tc9",
]
