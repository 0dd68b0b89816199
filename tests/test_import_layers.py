"""Imports inside the engine's layers (bounds, model, check, spec, query, portfolio) run one way: no module imports itself back.

Read from the source's syntax trees, so an import inside a function (a lazy import that only
dodges the cycle at load time) counts like one at the top of the file.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "verifier"
LAYERED = ("verifier.bounds", "verifier.model", "verifier.check", "verifier.spec", "verifier.query", "verifier.portfolio",
           "verifier.threads")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is named by its ``__init__``)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _known(name: str, modules) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None outside it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, node: ast.AST, modules) -> list[str]:
    """Modules of the package that one import statement loads (a submodule, else its package)."""
    if isinstance(node, ast.Import):
        return [m for m in (_known(a.name, modules) for a in node.names) if m]
    is_package = modules[module].name == "__init__.py"
    base = module if is_package else module.rpartition(".")[0]
    if node.level:
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = ".".join(p for p in (base, node.module) if p)
    else:
        source = node.module or ""
    out = []
    for alias in node.names:
        target = f"{source}.{alias.name}"
        out.append(target if target in modules else _known(source, modules))
    return [m for m in out if m]


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its file."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_imported(module, node, modules))
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _inside(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in LAYERED)


def test_cycle_finder_sees_lazy_imports():
    """A cycle closed only by an import inside a function is still a cycle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from verifier.bounds.engine import Domain\n")
    modules = _modules()
    stmt = tree.body[0].body[0]
    assert _imported("verifier.bounds.beta", stmt, modules) == ["verifier.bounds.engine"]
    assert _imported("verifier.bounds.beta", ast.parse("from . import engine").body[0], modules) == \
        ["verifier.bounds.engine"]


def test_named_modules_import_one_way():
    """engine -> alpha / beta, forward -> nonlinear, graph -> ops: none imports the other back."""
    graph = import_graph()
    for group in (("engine", "alpha", "beta", "problem"), ("forward", "nonlinear")):
        names = {f"verifier.bounds.{m}" for m in group}
        sub = {m: graph.get(m, set()) & names for m in names}
        assert cycles(sub) == [], group
    names = {"verifier.model.graph", "verifier.model.ops", "verifier.model.node"}
    assert cycles({m: graph.get(m, set()) & names for m in names}) == []


def test_no_import_cycle_through_the_engine_layers():
    """No import cycle (anywhere in ``verifier``) passes through a module of ``LAYERED``."""
    bad = [c for c in cycles(import_graph()) if any(_inside(m) for m in c)]
    assert bad == []


def test_audit_report_and_html_import_one_way():
    """report -> html -> extras: the page renderer never imports the report module back."""
    graph = import_graph()
    names = {"verifier.audit.report", "verifier.audit.html", "verifier.audit.extras"}
    assert cycles({m: graph.get(m, set()) & names for m in names}) == []
    assert "verifier.audit.report" not in graph["verifier.audit.html"]
