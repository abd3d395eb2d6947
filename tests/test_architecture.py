"""The house rules, checked on the source: imports run one way and modules stay small.

The import graph is built with ``ast`` from every ``import`` statement in ``gapkit/``,
at module level and inside functions, relative imports resolved.
"""

import ast
import sys
from pathlib import Path

import pytest

import gapkit

ROOT = Path(gapkit.__file__).parent

#: Layers, lowest first: a module may import modules of its own or a lower layer.
#: ``physics.baselines`` are physical inputs of the model (Delta-learning), like the
#: descriptors; everything else in ``physics`` uses fitted models.
LAYERS = [
    ("gapkit._version", "gapkit.utils", "gapkit.progress"),
    ("gapkit.data", "gapkit.metrics"),
    ("gapkit.descriptors", "gapkit.physics.baselines"),
    ("gapkit.gp",),
    ("gapkit.model",),
    ("gapkit.uncertainty", "gapkit.calculator", "gapkit.diagnostics", "gapkit.plotting",
     "gapkit.physics", "gapkit.ipi", "gapkit.lammps"),
    ("gapkit.cli", "gapkit.__main__", "gapkit.ipi.__main__"),
]
MAX_LINES = 520


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported gapkit module, line, at module level) for every import in a file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in tree.body}
    typing_only = {id(n) for blk in tree.body if isinstance(blk, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(blk.test) for n in ast.walk(blk)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:  # type hints only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from gapkit.gp import solver" imports the module gapkit.gp.solver
            targets = [f"{mod}.{a.name}" if _is_module(f"{mod}.{a.name}") else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            if t == "gapkit" or t.startswith("gapkit."):
                out.append((t, node.lineno, id(node) in top))
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel.with_suffix(".py")).is_file() or (ROOT.parent / rel).is_dir()


def _files():
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(module: str) -> int:
    best, rank = -1, None
    for k, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), k
    if rank is None:
        raise AssertionError(f"module {module} is in no layer of tests/test_architecture.py")
    return rank


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in _files():
        graph[_module_name(path)] = {t for t, _, _ in _imports(path) if t != "gapkit"}
    return graph


def test_import_graph_has_no_cycle():
    graph = _graph()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_imports_run_one_way():
    bad = []
    for path in _files():
        src = _module_name(path)
        if src == "gapkit":  # the package front door re-exports from every layer
            continue
        for target, line, _ in _imports(path):
            if target != "gapkit" and _layer(target) > _layer(src):
                bad.append(f"{src}:{line} imports {target} (a higher layer)")
    assert not bad, "\n".join(bad)


def test_no_function_level_imports_of_gapkit():
    """Function-level imports are for optional dependencies only, never to hide a circle."""
    bad = [f"{_module_name(p)}:{line} imports {t} inside a function"
           for p in _files() for t, line, top in _imports(p) if not top]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small_enough_to_read_in_one_sitting(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (split it by job)"


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    """The cycle check itself works: a graph with a circle fails."""
    monkeypatch.setattr(sys.modules[__name__], "_graph",
                        lambda: {"gapkit.a": {"gapkit.b"}, "gapkit.b": {"gapkit.a"}})
    with pytest.raises(AssertionError, match="import cycle: gapkit.a -> gapkit.b -> gapkit.a"):
        test_import_graph_has_no_cycle()
