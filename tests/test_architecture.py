"""docs/architecture.rst holds: imports point downwards, modules and functions stay short.

The checker reads every module's source (nothing is imported) and finds what it imports: ``import
dasktrain.x``, ``from dasktrain import x``, relative imports, imports inside functions and a
string that is exactly a dasktrain module's dotted name (``importlib.import_module("...")``, the
lazy maps of the package ``__init__`` files). On that graph it checks four rules:

1. **rooms**: each room (a top-level module or subpackage) imports only the rooms ``ALLOWED``
   lists for it;
2. **private**: nothing imports another room's private module (a path part starting with
   ``_``) or private name; a room offers what others need under a public name;
3. **layers**: inside ``harness/`` (its rooms, then the modules of each room) and ``ddp/``
   each part imports only parts of the layers below its own (``LAYERS``), never its room's
   own ``__init__``; the harness's results never import its report, and the command line
   takes the harness only from ``dasktrain.harness``;
4. **cycles**: no import cycle anywhere (the package root, which only loads its public names
   on first use, is left out).

Each rule is also fed a made-up violation, so a checker that stopped seeing one fails.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dasktrain"

# room -> the dasktrain rooms it may import (itself always allowed)
PLUMBING = {
    "_validation", "_config", "_compat", "_cache", "exceptions", "_typing", "_malloc", "_threads"
}  # fmt: skip
ALLOWED = {
    "exceptions": set(),
    "_config": {"exceptions"},
    "_compat": {"exceptions", "_config"},
    "_validation": {"exceptions", "_config", "_compat"},
    "_cache": {"exceptions", "_config", "_compat", "_validation"},
    "_typing": set(),
    "_malloc": {"exceptions", "_config"},
    "_threads": {"exceptions", "_compat"},
    "_dask": {"_validation", "exceptions", "_config", "_compat", "_typing", "_malloc"},
    "cluster": PLUMBING | {"_dask"},
    "dashboard": PLUMBING | {"_dask"},
    "datasets": PLUMBING | {"_dask"},
    "images": PLUMBING | {"_dask"},
    "features": PLUMBING | {"_dask"},
    "metrics": PLUMBING | {"_dask"},
    "models": PLUMBING | {"_dask", "metrics"},
    "ddp": PLUMBING | {"_dask", "features"},
    "tf": PLUMBING | {"_dask", "ddp"},
    "spark": PLUMBING | {"_dask", "images", "features", "metrics"},
    "testing": PLUMBING | {"_dask", "images", "features", "metrics", "models"},
    "harness": PLUMBING
    | {"_dask", "cluster", "datasets", "images", "features", "metrics", "models", "ddp"}
    | {"spark", "tf"},
    "cli": PLUMBING
    | {"_dask", "cluster", "datasets", "images", "features", "metrics", "models", "ddp"}
    | {"harness", "spark", "tf"},
}

# Inside a big room: its parts (the modules, or for the harness its rooms) from the top layer
# down; a part imports only parts of the layers below its own. A dotted key is a room inside a
# room. The docstring of each room's __init__ shows the same layers.
LAYERS = {
    "harness": [
        {"run"},
        {"report", "workloads"},
        {"results"},
        {"measure"},
        {"settings"},
    ],
    "harness.run": [
        {"runner"},
        {"comparison"},
        {"plan", "timing"},
        {"setups"},
        {"spark_setup"},
        {"live", "progress", "quiet"},
    ],
    "harness.workloads": [{"builtin"}, {"ddp", "inputs", "spark"}],
    "harness.measure": [{"monitor", "records"}, {"_energy"}, {"_sources", "breakdown", "machine"}],
    "harness.results": [{"outcome"}, {"analysis", "verdicts"}, {"answer", "printable", "tables"}],
    "harness.report": [
        {"shown"},
        {"page"},
        {"curves", "run_curves"},
        {"figures", "output", "text"},
    ],
    "ddp": [
        {"launcher", "recipes_keras", "tf_launcher"},
        {"_pool", "recipes", "tf_recipes"},
        {"_job", "_recipe_data", "_recipe_loop"},
        {"_group", "_select", "_tf_rank"},
        {"_pool_worker", "_rank", "_worker", "loaders", "local", "shards", "tf_context"},
        {"_feeder", "_rank_process", "_supervise", "helpers"},
        {"_env", "_shard"},
        {"_chunks", "_comm", "_datasets", "_plan", "_records", "_sockets", "_tf_env", "_tf_net"},
    ],
}
# Upward imports still there, each to be removed by the issue named (an entry that is gone
# fails test_known_exceptions_still_exist, so that this list only shrinks).
KNOWN_UPWARD: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------------------------
# The checker: sources -> imports -> violations
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Import:
    """One import of a dasktrain module by another (``names``: what it takes from it)."""

    source: str
    target: str
    names: tuple = ()
    line: int = 0


def _module_name(path, package=PACKAGE):
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_sources(package=PACKAGE) -> dict:
    """``{dotted module name: (source text, is a package __init__)}`` of the package."""
    return {
        _module_name(p, package): (p.read_text(), p.name == "__init__.py")
        for p in sorted(package.rglob("*.py"))
        if p.name != "__main__.py"
    }


def _resolve(name, modules):
    """The longest dotted prefix of ``name`` that is a module (None: not dasktrain's)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts = parts[:-1]
    return None


def _dynamic(tree):
    """Whether the module imports by name (``importlib.import_module`` or ``__import__``)."""
    return any(
        isinstance(n, ast.Call)
        and getattr(n.func, "attr", getattr(n.func, "id", None)) in ("import_module", "__import__")
        for n in ast.walk(tree)
    )


def _targets(node, module, is_package, modules, dynamic):
    """``[(dotted module, names taken from it)]`` of one AST node that imports."""
    if isinstance(node, ast.Import):
        return [(a.name, ()) for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = []
        if node.level:
            pkg = module.split(".") if is_package else module.split(".")[:-1]
            base = pkg[: len(pkg) - node.level + 1]
        base = ".".join(base + (node.module.split(".") if node.module else []))
        out = []
        for a in node.names:
            sub = f"{base}.{a.name}"
            out.append((sub, ()) if sub in modules else (base, (a.name,)))
        return out
    if dynamic and isinstance(node, ast.Constant) and node.value in modules:
        # import_module("dasktrain.x"), or a lazy map {name: "dasktrain.x"} beside such a call
        return [(node.value, ())]
    return []


def imports_of(module, source, is_package, modules) -> list[Import]:
    """Every dasktrain module ``module`` imports, at any depth of its source."""
    out = []
    tree = ast.parse(source)
    dynamic = _dynamic(tree)
    for node in ast.walk(tree):
        for name, names in _targets(node, module, is_package, modules, dynamic):
            target = _resolve(name, modules)
            if target is not None and target != module:
                out.append(Import(module, target, names, getattr(node, "lineno", 0)))
    return out


def import_graph(sources) -> list[Import]:
    modules = set(sources)
    return [
        imp for m, (src, is_pkg) in sources.items() for imp in imports_of(m, src, is_pkg, modules)
    ]


def room_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root


def room_violations(imports, allowed=ALLOWED) -> list[str]:
    """Imports of a room that ``allowed`` does not list for the importing room."""
    bad = []
    for imp in imports:
        src, dst = room_of(imp.source), room_of(imp.target)
        if src is None or dst is None or src == dst:
            continue  # the root re-exports lazily; `from .. import __version__` is the root
        if dst not in allowed.get(src, set()):
            bad.append(f"{imp.source}:{imp.line} ({src}) imports {imp.target} ({dst})")
    return sorted(set(bad))


def _private(module):
    return any(p.startswith("_") and p != "__init__" for p in module.split(".")[2:])


def private_violations(imports) -> list[str]:
    """Imports of another room's private module or private name."""
    bad = []
    for imp in imports:
        src, dst = room_of(imp.source), room_of(imp.target)
        if src is None or src == dst:
            continue
        private_names = [n for n in imp.names if n.startswith("_") and n != "__version__"]
        if _private(imp.target) or private_names:
            what = imp.target + (f" ({', '.join(private_names)})" if private_names else "")
            bad.append(f"{imp.source}:{imp.line} imports the private {what}")
    return sorted(set(bad))


def _inside(module, prefix):
    return module == prefix or module.startswith(prefix + ".")


def _part(module, prefix):
    """The part of ``prefix`` (a module, or a room inside it) that ``module`` lies in."""
    return module[len(prefix) + 1 :].split(".")[0]


def layer_violations(imports, room, layers, known=frozenset()) -> list[str]:
    """Imports inside ``room`` (``"ddp"``, or ``"harness.run"`` for a room inside a room) that
    do not point to a lower layer; a part's imports of itself (a room's own modules) are its
    own room's to check."""
    level = {m: i for i, layer in enumerate(layers) for m in layer}
    prefix = f"dasktrain.{room}"
    bad = []
    for imp in imports:
        if not (_inside(imp.source, prefix) and _inside(imp.target, prefix)):
            continue
        if imp.source == prefix or (imp.source, imp.target) in known:
            continue  # the room's __init__ re-exports
        src = _part(imp.source, prefix)
        if imp.target == prefix:
            bad.append(f"{imp.source}:{imp.line} imports its own room's __init__")
            continue
        dst = _part(imp.target, prefix)
        if src == dst:
            continue
        if src not in level or dst not in level:
            missing = src if src not in level else dst
            bad.append(f"{room}.{missing} is in no layer")
        elif level[dst] <= level[src]:
            bad.append(f"{imp.source}:{imp.line} (layer {level[src]}) imports {dst} (layer "
                       f"{level[dst]}): only lower layers")  # fmt: skip
    return sorted(set(bad))


def cycles(imports, skip=("dasktrain",)) -> list[list[str]]:
    """The import cycles (strongly connected components of more than one module)."""
    graph = {}
    for imp in imports:
        if imp.source not in skip and imp.target not in skip:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# --------------------------------------------------------------------------------------------
# The package holds the rules
# --------------------------------------------------------------------------------------------
@functools.cache
def _graph():
    return tuple(import_graph(package_sources()))


def _known_removed(imports):
    return [i for i in imports if (i.source, i.target) not in KNOWN_UPWARD]


def test_imports_point_downwards():
    bad = room_violations(_graph())
    assert not bad, "\n".join(bad)


def test_every_room_has_rules():
    rooms = {room_of(m) for m in package_sources()} - {None}
    assert rooms <= set(ALLOWED), f"rooms without import rules: {sorted(rooms - set(ALLOWED))}"


def test_no_private_imports_across_rooms():
    bad = private_violations(_graph())
    assert not bad, "\n".join(bad)


def _parts(room):
    prefix = f"dasktrain.{room}"
    return {_part(m, prefix) for m in package_sources() if m.startswith(prefix + ".")}


@pytest.mark.parametrize("room", sorted(LAYERS))
def test_layers_inside_big_rooms(room):
    modules = _parts(room)
    listed = set().union(*LAYERS[room])
    assert listed == modules, f"layers list {sorted(listed - modules)}, miss {modules - listed}"
    bad = layer_violations(_graph(), room, LAYERS[room], KNOWN_UPWARD)
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    found = cycles(_known_removed(_graph()))
    assert not found, f"import cycles: {found}"


def test_known_exceptions_still_exist():
    edges = {(i.source, i.target) for i in _graph()}
    gone = KNOWN_UPWARD - edges
    assert not gone, f"fixed, remove from KNOWN_UPWARD: {sorted(gone)}"


def test_layers_are_documented():
    """Each room's __init__ docstring names its layers in the order of LAYERS."""
    for room, layers in LAYERS.items():
        init = PACKAGE / room.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        for i, layer in enumerate(layers):
            line = f"{i + 1}. " + ", ".join(f"``{m}``" for m in sorted(layer))
            assert line in " ".join(doc.split()), f"{room}/__init__.py lacks the layer {line!r}"


def imports_between(imports, source_prefix, target_prefix) -> list[str]:
    """Imports of a module under ``source_prefix`` from one under ``target_prefix``."""
    return sorted(
        {
            f"{i.source}:{i.line} imports {i.target}"
            for i in imports
            if _inside(i.source, source_prefix) and _inside(i.target, target_prefix)
        }
    )


def test_results_never_import_the_report():
    """The outcome of a comparison is made without its report (issue 28): Results' numbers
    in harness/results/, what prints and saves them in harness/report/, never the reverse."""
    bad = imports_between(_graph(), "dasktrain.harness.results", "dasktrain.harness.report")
    assert not bad, "\n".join(bad)


def cli_into_the_harness(imports) -> list[str]:
    """Imports of the command line from inside the harness (its rooms, its modules)."""
    return [
        line
        for line in imports_between(imports, "dasktrain.cli", "dasktrain.harness")
        if not line.endswith(" imports dasktrain.harness")
    ]


def test_the_cli_takes_the_harness_from_its_face():
    """The command line takes compare(), the workload names and the engines from
    ``dasktrain.harness`` itself, so the harness's rooms can change without it."""
    bad = cli_into_the_harness(_graph())
    assert not bad, "\n".join(bad)


def test_the_docs_list_the_rules_of_the_test():
    """docs/architecture.rst's table of rooms says what ALLOWED enforces, room by room."""
    text = (PACKAGE.parent / "docs" / "architecture.rst").read_text()
    table = text.split("   room          may import\n")[1].split("\n\n")[0]
    documented = {}
    for line in table.splitlines():
        room, *allowed = line.split()
        names = set() if allowed == ["-"] else set(allowed)
        documented[room] = (names - {"plumbing"}) | (PLUMBING if "plumbing" in names else set())
    assert documented == ALLOWED


def test_the_docs_list_the_rooms_of_the_harness():
    """docs/architecture.rst's table of the harness's rooms says what LAYERS["harness"] holds:
    each room's layer, and that it may import every room of the layers below."""
    text = (PACKAGE.parent / "docs" / "architecture.rst").read_text()
    table = text.split("       layer  room        may import (besides itself)\n")[1]
    rows = [line.split() for line in table.split("\n\n")[0].splitlines()]
    layers = LAYERS["harness"]
    assert {room: int(n) for n, room, *_ in rows} == {
        room: i + 1 for i, layer in enumerate(layers) for room in layer
    }
    for n, room, *allowed in rows:
        below = set().union(set(), *layers[int(n) :])
        assert (set() if allowed == ["-"] else set(allowed)) == below, room


def test_the_docs_list_the_strict_modules():
    """docs/architecture.rst names the modules pyproject.toml holds to mypy's strict checks."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["mypy"]
    (strict,) = [o for o in config["overrides"] if o.get("disallow_untyped_defs")]
    text = (PACKAGE.parent / "docs" / "architecture.rst").read_text()
    listed = text.split("   strict modules\n")[1].split("\n\n")[0].split()
    assert listed == strict["module"]
    assert config["files"] == ["dasktrain"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.name))
def test_modules_and_functions_stay_short(path):
    text = path.read_text()
    assert text.count("\n") <= 500, f"{path.name} has {text.count(chr(10))} lines (> 500)"
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        doc = ast.get_docstring(node, clean=False)
        first = body[1] if doc is not None and len(body) > 1 else body[0]
        code_lines = node.end_lineno - first.lineno + 1
        assert code_lines <= 80, (
            f"{path.name}:{node.lineno} {node.name} has {code_lines} lines of code (> 80)"
        )


# --------------------------------------------------------------------------------------------
# Each rule breaks on purpose: the checker sees made-up violations
# --------------------------------------------------------------------------------------------
def _fake(**modules):
    """A made-up package: ``name="source"`` with ``__`` for dots, ``_init`` for __init__."""
    out = {"dasktrain": ("", True)}
    for key, src in modules.items():
        name = "dasktrain." + key.replace("__", ".")
        is_pkg = name.endswith("._init")
        name = name.removesuffix("._init")
        for i in range(2, name.count(".") + 1):  # the packages above it
            out.setdefault(".".join(name.split(".")[:i]), ("", True))
        out[name] = (src, is_pkg)
    return import_graph(out)


@pytest.mark.parametrize(
    "source",
    [
        "from dasktrain import harness",
        "from .. import harness",
        "import dasktrain.harness.runner",
        "from ..harness.runner import compare",
        "def f():\n    from ..harness import compare",
        "import importlib\nimportlib.import_module('dasktrain.harness')",
        "import importlib\nL = {'f': 'dasktrain.harness.runner'}\nimportlib.import_module(L['f'])",
    ],
)
def test_checker_sees_a_room_violation(source):
    g = _fake(models__kmeans=source, harness___init="", harness__runner="")
    assert room_violations(g), source
    assert not room_violations(_fake(models__kmeans="from .. import metrics", metrics___init=""))


@pytest.mark.parametrize(
    "source",
    [
        "from ..images._decode import decode_image",
        "from ..images import _decode",
        "import dasktrain.images._decode",
        "from ..images.decode import _helper",
        "def f():\n    from dasktrain.images._decode import decode_image",
    ],
)
def test_checker_sees_a_private_import(source):
    g = _fake(spark___read=source, images___init="", images___decode="", images__decode="")
    assert private_violations(g), source
    assert not private_violations(_fake(spark__read="from .. import _config", _config=""))
    assert not private_violations(_fake(images__a="from ._decode import x", images___decode=""))


def test_checker_sees_a_layer_violation():
    layers = [{"runner"}, {"plan"}, {"tables"}]
    ok = _fake(
        harness__runner="from .plan import x",
        harness__plan="from . import tables",
        harness__tables="",
    )
    assert not layer_violations(ok, "harness", layers)
    for g in [
        _fake(harness__tables="from .plan import x", harness__plan=""),  # upwards
        _fake(harness__plan="def f():\n    from .runner import x", harness__runner=""),
        _fake(harness__plan="from .tables import x", harness__tables="from .plan import y"),
        _fake(harness__plan="from . import compare", harness___init=""),  # its own __init__
        _fake(harness__plan="from .extra import x", harness__extra=""),  # in no layer
    ]:
        assert layer_violations(g, "harness", layers), g
    same = [{"runner"}, {"plan", "tables"}]
    assert layer_violations(_fake(harness__plan="from .tables import x"), "harness", same)


def test_checker_sees_layers_of_rooms_inside_a_room():
    rooms = [{"run"}, {"report"}, {"results"}]
    ok = _fake(
        harness__run__runner="from ..report.shown import Results\nfrom .plan import x",
        harness__run__plan="",
        harness__report__shown="from ..results.outcome import Outcome",
        harness__results__outcome="from . import tables",
        harness__results__tables="",
    )
    assert not layer_violations(ok, "harness", rooms)
    up = _fake(harness__results__outcome="def f():\n    from ..report.page import w",
               harness__report__page="")  # fmt: skip
    assert layer_violations(up, "harness", rooms)
    assert imports_between(up, "dasktrain.harness.results", "dasktrain.harness.report")
    assert not imports_between(ok, "dasktrain.harness.results", "dasktrain.harness.report")
    # inside a room inside a room: its own layers, its own __init__ refused
    inner = [{"runner"}, {"plan"}]
    assert layer_violations(
        _fake(harness__run__plan="from .runner import x", harness__run__runner=""),
        "harness.run",
        inner,
    )
    assert layer_violations(
        _fake(harness__run__plan="from . import x", harness__run___init=""), "harness.run", inner
    )


def test_checker_sees_the_cli_inside_the_harness():
    assert cli_into_the_harness(
        _fake(cli__compare="from ..harness.run.plan import ENGINES", harness__run__plan="")
    )
    assert not cli_into_the_harness(
        _fake(cli__compare="from ..harness import ENGINES", harness___init="")
    )


def test_checker_sees_a_cycle():
    g = _fake(a="from . import b", b="def f():\n    from .c import x", c="import dasktrain.a")
    assert cycles(g) == [["dasktrain.a", "dasktrain.b", "dasktrain.c"]]
    assert not cycles(_fake(a="from . import b", b="from . import c", c=""))
    # a string is an import only beside import_module: a format tag is not
    assert not cycles(_fake(a="from . import b", b="FORMAT = 'dasktrain.a'"))
    # the package root loads its names lazily: leaving it out is not missing a cycle
    assert not cycles(_fake(a="from . import __version__", _init="_L = {'x': 'dasktrain.a'}"))
