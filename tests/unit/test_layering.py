"""The package is layered in DESIGN order and has no import circles.

``errors``/``version`` → ``protocol`` (sans-I/O) → ``store`` → ``server`` | ``client`` →
``chaos`` | ``testing`` → ``scenarios`` → ``demo`` → ``cli`` → the package top (re-exports).
A module may import its own package or any layer below, never above, and never a sibling
of its own layer (``server`` and ``client`` do not know each other). Every import counts,
``TYPE_CHECKING`` ones included: a circle for the type checker is a circle in the design.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unbroken

ROOT = Path(unbroken.__file__).parent

# The rank of each top-level part of the package (its second dotted name).
LAYER: dict[str, int] = {
    "errors": 0,
    "version": 0,
    "_extras": 1,  # which extra brings which module (errors only)
    "protocol": 1,
    "observe": 1,
    "store": 2,
    "server": 3,
    "client": 3,
    "chaos": 4,
    "testing": 4,
    "adapters": 4,
    "scenarios": 5,
    "demo": 6,
    "cli": 7,
    "__main__": 8,
}
TOP = 9  # ``unbroken`` itself: re-exports only, nothing may import it

# Circles that are being taken apart (issue 23); the list only ever shrinks.
KNOWN_CIRCLES: list[set[str]] = []


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH: dict[str, set[str]] = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return TOP if len(parts) == 1 else LAYER[parts[1]]


def _circles() -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {m.split(".")[1] for m in MODULES if "." in m}
    assert parts <= set(LAYER), f"give these a layer in LAYER: {sorted(parts - set(LAYER))}"


def test_no_import_runs_back_up_the_layers() -> None:
    wrong = [
        f"{m} -> {t}"
        for m, targets in sorted(GRAPH.items())
        for t in sorted(targets)
        if _layer(t) > _layer(m)
        or (_layer(t) == _layer(m) and t.split(".")[1:2] != m.split(".")[1:2])
    ]
    assert wrong == []


def test_no_import_circles_beyond_the_known_ones() -> None:
    new = [c for c in _circles() if not any(c <= known for known in KNOWN_CIRCLES)]
    assert new == []


def test_known_circles_are_still_circles() -> None:
    """Drop an entry from KNOWN_CIRCLES as soon as its circle is gone."""
    circles = _circles()
    stale = [k for k in KNOWN_CIRCLES if not any(k & c for c in circles)]
    assert stale == []


#: Run in one fresh interpreter: preload the third-party modules the package imports
#: (never one of ours), then fork once per module (as many at once as there are cores)
#: and import it alone in the child. The children share the parent's third-party
#: imports, so this checks what it is for (an order dependency among our modules) at a
#: fraction of an interpreter per module.
_FORK_EACH = """
import importlib, json, os, sys, traceback
todo = json.load(sys.stdin)
for name in todo["preload"]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not [m for m in sys.modules if m == "unbroken" or m.startswith("unbroken.")]
failed = {}
todo_modules = list(reversed(todo["modules"]))
running = {}  # pid -> (module, the read end of its pipe)
while todo_modules or running:
    while todo_modules and len(running) < (os.cpu_count() or 1):
        module = todo_modules.pop()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code, text = 0, b""
            try:
                importlib.import_module(module)
            except BaseException:
                code, text = 1, traceback.format_exc().encode()[-2000:]
            os.write(w, text)  # under a pipe's buffer: never blocks
            os._exit(code)
        os.close(w)
        running[pid] = (module, r)
    pid, status = os.wait()
    module, r = running.pop(pid)
    with os.fdopen(r, "rb") as pipe:
        text = pipe.read()
    if status:
        failed[module] = (text.decode(errors="replace").strip().splitlines() or [str(status)])[-1]
json.dump(failed, sys.stdout)
"""


def _third_party() -> list[str]:
    """Every absolute import in the package that is not ours (stdlib included)."""
    names: set[str] = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return sorted(n for n in names if n != "unbroken" and not n.startswith("unbroken."))


@pytest.mark.timeout(300)
def test_each_module_imports_alone_in_a_fresh_interpreter() -> None:
    """An import-order dependency (works only if something else was imported first) fails."""
    todo = {"preload": _third_party(), "modules": sorted(MODULES)}
    done = subprocess.run(
        [sys.executable, "-c", _FORK_EACH],
        input=json.dumps(todo),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {}


def test_an_import_order_dependency_is_caught(tmp_path: Path) -> None:
    """The check itself: ``a`` works only once ``b`` was imported (in one interpreter,
    importing ``b`` then ``a`` passes); imported alone, ``a`` fails."""
    pkg = tmp_path / "ordpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "b.py").write_text("VALUE = 1\n")
    (pkg / "a.py").write_text("import ordpkg\n\nVALUE = ordpkg.b.VALUE\n")
    todo = {"preload": [], "modules": ["ordpkg.b", "ordpkg.a"]}
    done = subprocess.run(
        [sys.executable, "-c", _FORK_EACH],
        input=json.dumps(todo),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    failed = json.loads(done.stdout)
    assert list(failed) == ["ordpkg.a"] and "AttributeError" in failed["ordpkg.a"], failed
