"""The package layout's rules (docs/architecture.md), checked on the source, not by convention.

The import graph of wsq/ is built with ``ast`` from every ``import`` statement in every module,
module-level AND inside functions (a late import still couples two modules: it only hides the
cycle from the interpreter). An edge goes to the imported module itself: ``from wsq.io import
writer`` is an edge to ``wsq.io.writer``, ``from wsq.kernels.ops import pack`` to
``wsq.kernels.ops``. Importing a submodule also runs its package's ``__init__``; that implicit step
is not an edge here (the same convention as import-linter's graph), so each package ``__init__``
keeps to re-exports.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "wsq"

# The oracle may share only the numeric contract with the product (so a wrong constant there is
# caught by the hand-computed test below, not hidden by the oracle agreeing with itself).
ORACLE = "wsq.reference"
SHARED = {"wsq._spec"}
# Modules allowed to import the oracle: the microbenchmark checks every kernel against its twin
# before it times it (a check, like the tests), and wsq.reference is the oracle itself.
ORACLE_USERS = {"wsq.cli.bench"}


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("wsq",) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


# The compiled modules (CMakeLists.txt installs them at the top of wsq/): leaves of the graph.
EXTENSIONS = ("wsq._C", "wsq._cuda")


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    modules.update(dict.fromkeys(EXTENSIONS))
    for mod, path in modules.items():
        if path is None:
            continue
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                if t == "wsq" or t.startswith("wsq."):
                    r = _resolve(t, modules)
                    if r is not None and r != mod and r not in EXTENSIONS:
                        graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_checker_sees_late_and_relative_imports(tmp_path):
    # The checker itself, on a made-up package: a late (function-level) import and a relative
    # import are edges, `from pkg import submodule` points at the submodule, and the cycle they
    # close is reported.
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("from wsq.a import f\n")
    (tmp_path / "a.py").write_text("def f():\n    from wsq.sub import b\n")
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "sub" / "b.py").write_text("from .. import a\nimport torch\n")
    g = import_graph(tmp_path)
    assert g == {"wsq": {"wsq.a"}, "wsq.a": {"wsq.sub.b"}, "wsq.sub": set(), "wsq.sub.b": {"wsq.a"}}
    assert cycles(g) == [["wsq.a", "wsq.sub.b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles among wsq modules: " + "; ".join(
        " <-> ".join(c) for c in found
    )


# The stages bottom up (docs/architecture.md): a module may import its own layer or lower ones, never
# a higher one. Longest matching prefix wins; the public aliases sit with what they alias.
LAYERS = [
    ["wsq._spec", "wsq.errors", "wsq.metrics", "wsq.reference"],
    ["wsq.kernels"],
    ["wsq._info", "wsq.nn", "wsq.io.entropy", "wsq.entropy", "wsq.io.format", "wsq.io.writer"],
    ["wsq.core", "wsq.grid"],
    ["wsq.io", "wsq.io.reader"],
    ["wsq.search"],
    ["wsq"],
    ["wsq.examples", "wsq.cli"],
]


def _layer(mod: str) -> int:
    best = max(
        (p for layer in LAYERS for p in layer if mod == p or mod.startswith(p + ".")), key=len
    )
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_layers_import_downwards():
    graph = import_graph()
    up = [
        f"{m} (layer {_layer(m)}) -> {d} (layer {_layer(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert not up, "imports against the layering: " + "; ".join(up)


def test_oracle_imports_only_the_shared_contract():
    deps = import_graph()[ORACLE]
    assert deps <= SHARED, f"{ORACLE} imports product modules {sorted(deps - SHARED)}"


def test_product_does_not_import_the_oracle():
    users = sorted(m for m, deps in import_graph().items() if ORACLE in deps)
    assert set(users) <= ORACLE_USERS, f"product modules import the oracle: {users}"


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= 620, f"{path.relative_to(ROOT.parent)} has {n} lines (limit ~600): split it"
