"""Layers point one way: a walk over every import in the package, function-level ones included.

Ranks, lowest first. A module may import its own unit or a lower rank, never a higher one; Airflow and
the Airflow-facing units only from the Airflow-facing ranks; no database driver in the kit; and no cycle
between packages (sub-packages and modules at depth two, e.g. ``runtime.refresh`` and ``runtime.connect``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hissuno_airflow"

RANKS = {
    "kit": 0,
    "settings": 1, "plugins": 1,
    "registry": 2, "store": 2,
    "runtime": 3,
    "web": 4,
    # Airflow-facing: the host implementation and the contract's Airflow places.
    "airflow_host": 5, "hooks": 5, "provider_info": 5, "operators": 5,
    "dag_factory": 6, "airflow_plugin": 6,
    # Entry points.
    "cli": 7, "devsetup": 7,
}
AIRFLOW_FACING = 5
# Where the kit's conformance harness runs a plugin through the real platform, it imports it by name at
# call time (kit.testing._platform): the harness is for plugin authors' test suites, never the runtime.
HARNESS = "hissuno_airflow.kit.testing"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module is None or (node.level and not node.module):
                # ``from . import x``: x may be a module of that package.
                out.extend((f"{mod}.{a.name}", node.lineno) for a in node.names)
            else:
                out.append((mod, node.lineno))
    return out


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "hissuno_airflow" or len(parts) < 2:
        return None
    return parts[1]


def _node(module: str) -> str:
    return ".".join(module.split(".")[:3])


def _all_imports() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        src = _module_name(path)
        for target, line in _imports(path):
            found.append((src, target, line))
    return found


def test_every_unit_has_a_rank() -> None:
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert units <= set(RANKS), f"give these a rank in tests/test_layers.py: {sorted(units - set(RANKS))}"


def test_no_import_points_up_and_airflow_stays_in_the_airflow_layer() -> None:
    problems = []
    for src, target, line in _all_imports():
        src_unit = _unit(src)
        if src_unit is None:
            continue
        rank = RANKS[src_unit]
        top = target.split(".")[0]
        if top == "airflow" and rank < AIRFLOW_FACING:
            problems.append(f"{src}:{line} imports {target} (Airflow outside the Airflow-facing layer)")
        if top in ("psycopg", "psycopg_pool", "pgvector") and src_unit == "kit":
            problems.append(f"{src}:{line} imports {target} (the kit imports no database driver)")
        dst_unit = _unit(target)
        if dst_unit is None or dst_unit == src_unit or src == HARNESS:
            continue
        if RANKS[dst_unit] > rank:
            problems.append(f"{src}:{line} imports {target} ({src_unit} rank {rank} -> {dst_unit} rank "
                            f"{RANKS[dst_unit]})")
    assert not problems, "\n".join(problems)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for src, target, _ in _all_imports():
        if _unit(target) is None or _unit(src) is None:
            continue
        a, b = _node(src), _node(target)
        if a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
            graph.setdefault(a, set()).add(b)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m):], m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("source, message", [
    ("from ..airflow_host import install\n", "rank 3 -> airflow_host"),
    ("def f():\n    from airflow.sdk import Variable\n", "Airflow outside"),
])
def test_the_walk_sees_a_violation(tmp_path: Path, source: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself can fail: a planted upward import inside the runtime is reported."""
    planted = ROOT / "runtime" / "_planted_layer_probe.py"
    planted.write_text(source)
    try:
        with pytest.raises(AssertionError, match=message):
            test_no_import_points_up_and_airflow_stays_in_the_airflow_layer()
    finally:
        planted.unlink()
