"""The package layout's rules (docs/architecture.md), checked on the source, not by convention.

The import graph of wsq/ is built with ``ast`` from every ``import`` statement in every module,
module-level AND inside functions (a late import still couples two modules: it only hides the
cycle from the interpreter). An edge goes to the imported module itself: ``from wsq.io import
writer`` is an edge to ``wsq.io.writer``, ``from wsq.kernels.ops import pack`` to
``wsq.kernels.ops``. Two more kinds of edge are what the interpreter does too:

* Importing ``wsq.p.x`` runs ``wsq/p/__init__.py`` first: the importer gets an edge to ``wsq.p``
  and that ``__init__``'s own edges, unless the importer sits inside ``wsq.p`` (then that
  ``__init__`` is already running). The root ``wsq`` contains every module, so it never counts
  implicitly; an explicit ``import wsq`` does.
* ``wsq.name`` (or ``pkg.name``) read off an imported package is an edge to wherever that package's
  ``__init__`` gets ``name`` from: a submodule, a ``from X import name`` (X), or a name its
  module-level ``__getattr__`` imports lazily.
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
# before it times it (a check, like the tests), and the root package, whose __getattr__ loads it on
# first access of wsq.reference (for tests and checks; `import wsq` does not load it).
ORACLE_USERS = {"wsq.cli.bench", "wsq"}


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


def _absolute(node: ast.ImportFrom, mod: str, is_pkg: bool) -> str:
    base = node.module or ""
    if node.level:
        pkg = mod if is_pkg else mod.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    return base


def _literals(test: ast.expr) -> list[str]:
    """The names an ``if name == "x"`` / ``if name in ("x", "y")`` test in ``__getattr__`` picks."""
    if isinstance(test, ast.Compare) and len(test.comparators) == 1:
        c = test.comparators[0]
        if isinstance(c, ast.Constant) and isinstance(c.value, str):
            return [c.value]
        if isinstance(c, (ast.Tuple, ast.List, ast.Set)):
            return [e.value for e in c.elts if isinstance(e, ast.Constant)]
    return []


def _imported(node: ast.AST, mod: str, is_pkg: bool, modules) -> list[str]:
    """The modules one statement imports (``import_module("wsq.x")`` calls included)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _absolute(node, mod, is_pkg)
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _exports(tree: ast.Module, mod: str, modules) -> dict[str, str]:
    """name -> module a package ``__init__`` takes it from: its top-level imports, and the names
    its ``__getattr__`` imports on first access."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, mod, True)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out[a.asname or a.name] = sub if sub in modules else base
        elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            for branch in ast.walk(node):
                if isinstance(branch, ast.If):
                    targets = [
                        t
                        for stmt in branch.body
                        for n in ast.walk(stmt)
                        for t in _imported(n, mod, True, modules)
                        if t == "wsq" or t.startswith("wsq.")
                    ]
                    if targets:
                        out.update(dict.fromkeys(_literals(branch.test), targets[0]))
    return out


def _bound(tree: ast.Module, mod: str, is_pkg: bool, modules) -> dict[str, str]:
    """Local names bound to wsq modules by imports: ``import wsq`` / ``import wsq.a.b`` bind
    ``wsq``, ``import wsq.a as x`` binds x, ``from wsq import a`` binds a (a module)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "wsq" or a.name.startswith("wsq."):
                    out[a.asname or "wsq"] = a.name if a.asname else "wsq"
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, mod, is_pkg)
            for a in node.names:
                if f"{base}.{a.name}" in modules:
                    out[a.asname or a.name] = f"{base}.{a.name}"
    return out


def _attribute_targets(tree, bound, exports, modules) -> list[str]:
    """Modules reached by ``x.name.more`` where x is bound to a wsq module: the longest module
    prefix, then the name its package's ``__init__`` exports, if any."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, v = [node.attr], node.value
        while isinstance(v, ast.Attribute):
            chain.append(v.attr)
            v = v.value
        if not isinstance(v, ast.Name) or v.id not in bound:
            continue
        dotted = [bound[v.id]] + chain[::-1]
        i = len(dotted)
        while i > 1 and ".".join(dotted[:i]) not in modules:
            i -= 1
        target = ".".join(dotted[:i])
        if i < len(dotted) and dotted[i] in exports.get(target, {}):
            target = exports[target][dotted[i]]
        out.append(target)
    return out


def _implicit(mod: str, target: str, packages) -> list[str]:
    """The package ``__init__`` files importing `target` runs that are not already running for
    `mod` (every package containing `mod`, the root included, is)."""
    parts = target.split(".")
    out = []
    for i in range(2, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in packages and not (mod == pkg or mod.startswith(pkg + ".")):
            out.append(pkg)
    return out


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in modules.items()}
    exports = {m: _exports(trees[m], m, modules) for m in packages}
    known = dict(modules, **dict.fromkeys(EXTENSIONS))
    explicit: dict[str, set[str]] = {}
    for mod, tree in trees.items():
        is_pkg = mod in packages
        targets = [t for n in ast.walk(tree) for t in _imported(n, mod, is_pkg, known)]
        targets += _attribute_targets(tree, _bound(tree, mod, is_pkg, modules), exports, modules)
        explicit[mod] = set()
        for t in targets:
            if t == "wsq" or t.startswith("wsq."):
                r = _resolve(t, known)
                if r is not None and r != mod and r not in EXTENSIONS:
                    explicit[mod].add(r)
    graph: dict[str, set[str]] = {}
    for mod, deps in explicit.items():
        graph[mod] = set(deps)
        for t in deps:
            for pkg in _implicit(mod, t, packages):
                graph[mod] |= {pkg} | explicit[pkg]
        graph[mod].discard(mod)
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
    # import are edges, `from pkg import submodule` points at the submodule (and runs pkg's
    # __init__: an edge to wsq.sub), and the cycle they close is reported.
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("from wsq.a import f\n")
    (tmp_path / "a.py").write_text("def f():\n    from wsq.sub import b\n")
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "sub" / "b.py").write_text("from .. import a\nimport torch\n")
    g = import_graph(tmp_path)
    assert g == {
        "wsq": {"wsq.a"},
        "wsq.a": {"wsq.sub", "wsq.sub.b"},
        "wsq.sub": set(),
        "wsq.sub.b": {"wsq.a"},
    }
    assert cycles(g) == [["wsq.a", "wsq.sub.b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_checker_sees_a_cycle_through_a_package_init(tmp_path):
    # wsq.a imports only wsq.p.q, which imports nothing; but importing wsq.p.q runs
    # wsq/p/__init__.py, which imports wsq.a: a cycle the interpreter walks and the checker must see
    (tmp_path / "p").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "p" / "__init__.py").write_text("from wsq.a import f\n")
    (tmp_path / "p" / "q.py").write_text("X = 1\n")
    (tmp_path / "a.py").write_text("def f():\n    from wsq.p.q import X\n    return X\n")
    g = import_graph(tmp_path)
    assert g["wsq.a"] == {"wsq.p", "wsq.p.q"}
    assert cycles(g) == [["wsq.a", "wsq.p"]]
    # a module inside wsq.p does not re-run its own package's __init__: no edge, no cycle
    (tmp_path / "p" / "r.py").write_text("from wsq.p.q import X\n")
    assert import_graph(tmp_path)["wsq.p.r"] == {"wsq.p.q"}


def test_checker_sees_a_cycle_through_wsq_attribute_access(tmp_path):
    # wsq.c reads wsq.save and wsq.lazy off the package; the root takes `save` from wsq.b and
    # imports wsq.d on first access of `lazy` (its __getattr__). wsq.b imports wsq.c: the cycle
    # b -> c -> b runs through `wsq.save` alone (it stays with the root's own edges removed).
    (tmp_path / "__init__.py").write_text(
        "from wsq.b import save\n\n\n"
        "def __getattr__(name):\n"
        "    if name == 'lazy':\n"
        "        import importlib\n\n"
        "        return importlib.import_module('wsq.d')\n"
        "    raise AttributeError(name)\n"
    )
    (tmp_path / "b.py").write_text("from wsq.c import run\n\n\ndef save():\n    pass\n")
    (tmp_path / "c.py").write_text("import wsq\n\n\ndef run():\n    wsq.save()\n    wsq.lazy\n")
    (tmp_path / "d.py").write_text("")
    g = import_graph(tmp_path)
    assert g["wsq.c"] == {"wsq", "wsq.b", "wsq.d"}
    without_root = {m: d - {"wsq"} for m, d in g.items() if m != "wsq"}
    assert cycles(without_root) == [["wsq.b", "wsq.c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles among wsq modules: " + "; ".join(
        " <-> ".join(c) for c in found
    )


# The stages bottom up (docs/architecture.md): a module may import its own entry or lower layers,
# never a higher layer, and never another entry of its own layer (siblings stay independent: core
# builds the compressed model and io reads and writes it, neither imports the other). Longest
# matching prefix wins.
LAYERS = [
    ["wsq._spec", "wsq.errors", "wsq.checks", "wsq.metrics"],
    ["wsq.reference"],
    ["wsq.kernels"],
    ["wsq._info", "wsq.nn", "wsq.entropy", "wsq.container"],
    ["wsq.compressed"],
    ["wsq.core", "wsq.io"],
    ["wsq.methods"],
    ["wsq.from_checkpoint", "wsq.search"],
    ["wsq.protocol"],
    ["wsq"],
    ["wsq.examples"],
    ["wsq.cli"],
]


def _entry(mod: str) -> str:
    return max(
        (p for layer in LAYERS for p in layer if mod == p or mod.startswith(p + ".")), key=len
    )


def _layer(mod: str) -> int:
    best = _entry(mod)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def _edges(keep) -> list[str]:
    """Every edge m -> d of the graph for which keep(m, d), with the layers of both ends."""
    graph = import_graph()
    return [
        f"{m} (layer {_layer(m)}) -> {d} (layer {_layer(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if keep(m, d)
    ]


def test_layers_import_downwards():
    up = _edges(lambda m, d: _layer(d) > _layer(m))
    assert not up, "imports against the layering: " + "; ".join(up)


def test_siblings_in_a_layer_are_independent():
    across = _edges(lambda m, d: _layer(d) == _layer(m) and _entry(d) != _entry(m))
    assert not across, "imports between sibling stages: " + "; ".join(across)


def test_every_module_has_a_layer():
    assert all(_entry(m) for m in import_graph())


def test_oracle_imports_only_the_shared_contract():
    deps = import_graph()[ORACLE]
    assert deps <= SHARED, f"{ORACLE} imports product modules {sorted(deps - SHARED)}"


def test_product_does_not_import_the_oracle():
    users = sorted(m for m, deps in import_graph().items() if ORACLE in deps)
    assert set(users) <= ORACLE_USERS, f"product modules import the oracle: {users}"


# One responsibility per file keeps files short: ~500 lines, kernels/ (op schemas, checks and fakes
# of a whole kernel family in one place) up to ~600.
SIZE_LIMIT, KERNELS_SIZE_LIMIT = 500, 620


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    limit = KERNELS_SIZE_LIMIT if path.relative_to(ROOT).parts[0] == "kernels" else SIZE_LIMIT
    assert n <= limit, f"{path.relative_to(ROOT.parent)} has {n} lines (limit {limit}): split it"


def _package(mod: str, modules) -> str:
    return mod if modules[mod].name == "__init__.py" else mod.rpartition(".")[0]


def private_imports(root: pathlib.Path = ROOT) -> list[str]:
    """``from wsq.x import _name`` and ``mod._name`` (mod a wsq module bound by an import) where the
    importer sits in another package than the name: a private name is its package's own business.
    The compiled modules (wsq._C, wsq._cuda) are private by name and loaded by wsq.kernels only."""
    modules = _modules(root)
    out = []
    for mod, path in modules.items():
        here = _package(mod, modules)
        aliases: dict[str, str] = {}
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsq"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in modules:
                        aliases[a.asname or a.name] = sub
                    elif _private(a.name) and sub not in EXTENSIONS:
                        owner = _resolve(node.module, modules)
                        if owner is not None and _package(owner, modules) != here:
                            out.append(f"{mod}: from {node.module} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("wsq.") and a.asname and a.name in modules:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                owner = aliases[node.value.id]
                if _package(owner, modules) != here:
                    out.append(f"{mod}: {owner}.{node.attr}")
    return sorted(set(out))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_checker_sees_private_names(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "__init__.py").write_text("")
    (tmp_path / "p" / "a.py").write_text("def _f():\n    pass\n_X = 1\n")
    (tmp_path / "p" / "b.py").write_text("from wsq.p.a import _f\n")  # same package: its own
    (tmp_path / "c.py").write_text("from wsq.p.a import _f\nfrom wsq.p import a as m\nm._X\n")
    assert private_imports(tmp_path) == ["wsq.c: from wsq.p.a import _f", "wsq.c: wsq.p.a._X"]


def test_no_private_names_across_packages():
    found = private_imports()
    assert not found, "private names used outside their package: " + "; ".join(found)
