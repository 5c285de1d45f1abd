"""The layer rules of the design notes (DESIGN.md, "Layers"), checked on the imports.

The imports are read statically with :mod:`ast` (nothing is imported), so a rule
breaks the build even when the offending import sits under ``if TYPE_CHECKING:``
or inside a function.  Each violation names the importing module, the line and
the import, so the failure says what to fix:

1. the pure layer imports neither grpc nor any flavour (``_async``, ``_sync``,
   ``_backends``), and inside the package only pure modules and the generated
   message modules (``_pb/*_pb2``), so grpc cannot come in through ``_status``;
2. ``_async`` never imports ``_sync`` (nor the sync backend), and vice versa;
3. a recipe module (``concurrency/``) never imports the client module, the
   ``recipes`` mixin or the ``namespace`` module (nor the root package, which
   re-exports the client): recipes are typed against the narrow protocols;
4. nothing outside ``_backends`` imports ``asyncio``, ``threading`` or
   ``grpc.aio`` (see ``FLAVOUR_MODULE_ALLOWED`` for the few programs that need a
   thread of their own);
5. production code (everything but ``etcdsync.testing``) never imports
   ``etcdsync.testing``;
6. no import cycle (a strongly connected component of the module graph, edges
   under ``TYPE_CHECKING`` included) contains the client module or a recipe module.

Edges follow the usual static convention (as grimp/import-linter do): ``from a
import b`` is an edge to the module ``a.b`` when that module exists, else to
``a``; importing ``a.b.c`` is not counted as importing the packages ``a`` and
``a.b``.  Without that convention every ``from .. import errors`` would be an
edge to ``etcdsync/__init__`` and the whole package one cycle.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "etcdsync"

# The pure layer: IO-free, shared by both flavours.  Must not import grpc or a
# flavour.  Names are module paths relative to the package (a name with no module,
# such as ``_namespace`` today, simply matches nothing).
PURE_MODULES = {
    "errors",
    "ops",
    "models",
    "_keys",
    "codecs",
    "_deadline",
    "_callbacks",
    "_keyspace",
    "_namespace",
}
PURE_SUFFIX = "_types"  # admin_types, config_types, lease_types, watch_types, ...

FLAVOURS = ("_async", "_sync")
BACKENDS = "_backends"
# Modules, relative to a flavour, that a recipe must not import.
RECIPE_FORBIDDEN = ("client", "recipes", "namespace")
# The modules that only ``_backends`` may import.
FLAVOUR_MODULES = ("asyncio", "threading", "grpc.aio")

# Programs and harnesses that run threads of their own next to the sync client:
# the cli (`etcdsync lock`'s renewal watcher, child-process pumps, the demo's
# workers and stdin readers) and the test harness (the fault proxy's accept loop).
# They are not library code, so `threading` is fine there; asyncio and grpc.aio
# are not.
FLAVOUR_MODULE_ALLOWED: dict[str, tuple[str, ...]] = {
    "etcdsync.cli": ("threading",),
    "etcdsync.testing": ("threading",),
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen from ``module``."""

    module: str  # the importing module, dotted
    target: str  # the imported module (or package), dotted, absolute
    line: int
    text: str  # the statement as written, for the message
    type_checking: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        where = " (under TYPE_CHECKING)" if self.type_checking else ""
        return f"{self.module}:{self.line}: `{self.text}`{where}"


@dataclass
class Package:
    root: str  # the top-level package name
    modules: dict[str, Path]  # dotted name -> file
    packages: set[str]  # dotted names that are packages (__init__.py)
    imports: list[Import]

    def internal(self, name: str) -> bool:
        return name == self.root or name.startswith(self.root + ".")

    def edges(self) -> dict[str, set[str]]:
        graph: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.target in self.modules and imp.target != imp.module:
                graph[imp.module].add(imp.target)
        return graph


# --- reading the imports -------------------------------------------------------------


def _module_name(root_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(root_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement in ``node``, with whether it is under TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_checking
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), type_checking)
        else:
            yield from _walk(child, type_checking)


def read_package(package_dir: Path) -> Package:
    """Parse every module of the package at ``package_dir`` and list its imports."""
    modules: dict[str, Path] = {}
    packages: set[str] = set()
    for path in sorted(package_dir.rglob("*.py")):
        name = _module_name(package_dir, path)
        modules[name] = path
        if path.name == "__init__.py":
            packages.add(name)
    pkg = Package(package_dir.name, modules, packages, [])
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # The package that relative imports start from.
        here = name if name in packages else name.rpartition(".")[0]
        for stmt, type_checking in _walk(tree):
            text = ast.unparse(stmt)
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            else:
                assert isinstance(stmt, ast.ImportFrom)
                if stmt.level:
                    base_parts = here.split(".")
                    if stmt.level - 1 >= len(base_parts):
                        raise AssertionError(f"{name}: `{text}` goes above the package")
                    base = ".".join(base_parts[: len(base_parts) - (stmt.level - 1)])
                    source = f"{base}.{stmt.module}" if stmt.module else base
                else:
                    source = stmt.module or ""
                if source == "__future__":
                    continue
                targets = []
                for alias in stmt.names:
                    sub = f"{source}.{alias.name}"
                    # `from a import b`: the module a.b if there is one, else a itself.
                    # Outside the package we cannot tell, so both names are checked
                    # (`from grpc import aio` imports grpc.aio).
                    if sub in modules:
                        targets.append(sub)
                    elif pkg.internal(source):
                        targets.append(source)
                    else:
                        targets.extend((source, sub))
            for target in dict.fromkeys(targets):
                pkg.imports.append(Import(name, target, stmt.lineno, text, type_checking))
    return pkg


# --- the rules -----------------------------------------------------------------------


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_pure(pkg: Package, name: str) -> bool:
    rel = name[len(pkg.root) + 1 :] if name != pkg.root else ""
    return rel in PURE_MODULES or (rel.endswith(PURE_SUFFIX) and "." not in rel)


def _pure_dependency(pkg: Package, name: str) -> bool:
    """May the pure layer import ``name`` (a module of the package)?"""
    messages = name.startswith(f"{pkg.root}._pb.") and name.endswith("_pb2")
    return _is_pure(pkg, name) or messages


def _flavour_of(pkg: Package, name: str) -> str | None:
    """``_async``/``_sync`` for flavour code and its backend, else None."""
    for flavour in FLAVOURS:
        if _within(name, f"{pkg.root}.{flavour}") or name == f"{pkg.root}.{BACKENDS}.{flavour}":
            return flavour
    return None


def _is_recipe(pkg: Package, name: str) -> bool:
    return any(_within(name, f"{pkg.root}.{f}.concurrency") for f in FLAVOURS)


def _is_client(pkg: Package, name: str) -> bool:
    return any(name == f"{pkg.root}.{f}.client" for f in FLAVOURS)


def violations(pkg: Package) -> list[str]:
    """Every broken layer rule, one line each."""
    found: list[str] = []
    testing = f"{pkg.root}.testing"
    backends = f"{pkg.root}.{BACKENDS}"
    for imp in pkg.imports:
        src, dst = imp.module, imp.target
        if _is_pure(pkg, src):
            if _within(dst, "grpc"):
                found.append(f"pure layer imports grpc: {imp}")
            if any(_within(dst, f"{pkg.root}.{part}") for part in (*FLAVOURS, BACKENDS)):
                found.append(f"pure layer imports a flavour: {imp}")
            elif pkg.internal(dst) and not _pure_dependency(pkg, dst):
                found.append(f"pure layer imports a module outside it: {imp}")
        src_flavour, dst_flavour = _flavour_of(pkg, src), _flavour_of(pkg, dst)
        if src_flavour and dst_flavour and src_flavour != dst_flavour:
            found.append(f"{src_flavour} imports {dst_flavour}: {imp}")
        if _is_recipe(pkg, src):
            bad = {f"{pkg.root}.{f}.{m}" for f in FLAVOURS for m in RECIPE_FORBIDDEN}
            if dst in bad or dst == pkg.root:
                found.append(f"recipe imports the client layer: {imp}")
        if not _within(src, backends):
            allowed = next(
                (mods for prefix, mods in FLAVOUR_MODULE_ALLOWED.items() if _within(src, prefix)),
                (),
            )
            for banned in FLAVOUR_MODULES:
                if _within(dst, banned) and banned not in allowed:
                    found.append(f"{banned} imported outside {BACKENDS}: {imp}")
        if _within(dst, testing) and not _within(src, testing):
            found.append(f"production code imports {testing}: {imp}")
    for cycle in import_cycles(pkg):
        members = [m for m in cycle if _is_client(pkg, m) or _is_recipe(pkg, m)]
        if members:
            inside = "; ".join(str(i) for i in cycle_edges(pkg, cycle))
            found.append(
                f"import cycle includes {', '.join(members)}: "
                f"{{{', '.join(cycle)}}}, imports inside it: {inside}"
            )
    return found


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(sorted(component))
    return sorted(result)


def import_cycles(pkg: Package) -> list[list[str]]:
    """The strongly connected components (size > 1) of the module graph."""
    return _strongly_connected(pkg.edges())


def cycle_edges(pkg: Package, component: Iterable[str]) -> list[Import]:
    """The imports that stay inside one strongly connected component."""
    members = set(component)
    return [
        i
        for i in pkg.imports
        if i.module in members and i.target in members and i.target != i.module
    ]


# --- the tests -----------------------------------------------------------------------


def test_layer_rules() -> None:
    pkg = read_package(PACKAGE_DIR)
    found = violations(pkg)
    assert not found, "layer rules broken (DESIGN.md, Layers):\n  " + "\n  ".join(found)


def test_pure_layer_is_known() -> None:
    # The rule would pass vacuously if the modules were renamed: make sure it sees them.
    pkg = read_package(PACKAGE_DIR)
    pure = {name for name in pkg.modules if _is_pure(pkg, name)}
    assert {"etcdsync.errors", "etcdsync.ops", "etcdsync._callbacks"} <= pure
    assert any(name.endswith("_types") for name in pure)
    assert any(_is_recipe(pkg, name) for name in pkg.modules)
    assert any(_is_client(pkg, name) for name in pkg.modules)


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "etcdsync"


def test_checker_reports_each_rule(tmp_path: Path) -> None:
    package_dir = _write_tree(
        tmp_path,
        {
            "etcdsync/__init__.py": "",
            "etcdsync/errors.py": "import grpc\n",
            "etcdsync/ops.py": "from ._async import kv\n",
            "etcdsync/_keys.py": "from . import _status, errors\nfrom ._pb import rpc_pb2\n",
            "etcdsync/_pb/__init__.py": "",
            "etcdsync/_pb/rpc_pb2.py": "",
            "etcdsync/watch_types.py": "from ._backends import _sync\n",
            "etcdsync/_status.py": "import grpc\n",  # fine: not the pure layer
            "etcdsync/_backends/__init__.py": "",
            "etcdsync/_backends/_async.py": "import asyncio\nfrom grpc import aio\n",
            "etcdsync/_backends/_sync.py": "import threading\n",
            "etcdsync/_async/__init__.py": "",
            "etcdsync/_async/kv.py": "from .._sync import kv\n",
            "etcdsync/_async/lease.py": "import threading\nfrom .._backends import _sync\n",
            "etcdsync/_async/client.py": "from .concurrency import mutex\n",
            "etcdsync/_async/concurrency/__init__.py": "",
            "etcdsync/_async/concurrency/mutex.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from ..client import AsyncClient\n"
            ),
            "etcdsync/_sync/__init__.py": "",
            "etcdsync/_sync/kv.py": "import etcdsync._async.kv\n",
            "etcdsync/_sync/concurrency/__init__.py": "",
            "etcdsync/_sync/concurrency/session.py": "from ... import Client\n",
            "etcdsync/_sync/watch.py": "def f():\n    from grpc import aio\n",
            "etcdsync/cli/__init__.py": "",
            "etcdsync/cli/server.py": "import threading\nfrom ..testing import server\n",
            "etcdsync/cli/demo.py": "import asyncio\n",
            "etcdsync/testing/__init__.py": "import threading\n",
            "etcdsync/testing/server.py": "from . import cluster\n",
        },
    )
    pkg = read_package(package_dir)
    found = violations(pkg)
    text = "\n".join(found)
    expected = [
        "pure layer imports grpc: etcdsync.errors:1: `import grpc`",
        "pure layer imports a flavour: etcdsync.ops:1: `from ._async import kv`",
        "pure layer imports a module outside it: etcdsync._keys:1: `from . import _status, errors`",
        "pure layer imports a flavour: etcdsync.watch_types:1: `from ._backends import _sync`",
        "_async imports _sync: etcdsync._async.kv:1: `from .._sync import kv`",
        "_async imports _sync: etcdsync._async.lease:2: `from .._backends import _sync`",
        "_sync imports _async: etcdsync._sync.kv:1: `import etcdsync._async.kv`",
        "recipe imports the client layer: etcdsync._async.concurrency.mutex:3: "
        "`from ..client import AsyncClient` (under TYPE_CHECKING)",
        "recipe imports the client layer: etcdsync._sync.concurrency.session:1: "
        "`from ... import Client`",
        "threading imported outside _backends: etcdsync._async.lease:1: `import threading`",
        "grpc.aio imported outside _backends: etcdsync._sync.watch:2: `from grpc import aio`",
        "asyncio imported outside _backends: etcdsync.cli.demo:1: `import asyncio`",
        "production code imports etcdsync.testing: etcdsync.cli.server:2: "
        "`from ..testing import server`",
        "import cycle includes etcdsync._async.client, etcdsync._async.concurrency.mutex: "
        "{etcdsync._async.client, etcdsync._async.concurrency.mutex}",
    ]
    for line in expected:
        assert line in text, f"not reported: {line}\nreported:\n{text}"
    # Nothing else: grpc outside the pure layer, the backends' own imports, the cli's
    # and the harness's threads and the harness importing itself are all allowed.
    assert len(found) == len(expected), text
    assert import_cycles(pkg) == [
        ["etcdsync._async.client", "etcdsync._async.concurrency.mutex"],
        ["etcdsync._async.kv", "etcdsync._sync.kv"],  # a cycle, but reported as _async/_sync
    ]


def test_cycle_finder(tmp_path: Path) -> None:
    package_dir = _write_tree(
        tmp_path,
        {
            "etcdsync/__init__.py": "from . import a\n",
            "etcdsync/a.py": "from . import b\n",
            "etcdsync/b.py": "from .c import x\n",
            "etcdsync/c.py": "from .a import y\nfrom . import d\n",
            "etcdsync/d.py": "from . import e\n",
            "etcdsync/e.py": "from etcdsync import d\n",
            "etcdsync/f.py": "from . import f\n",  # a self-import is no cycle
        },
    )
    pkg = read_package(package_dir)
    assert import_cycles(pkg) == [
        ["etcdsync.a", "etcdsync.b", "etcdsync.c"],
        ["etcdsync.d", "etcdsync.e"],
    ]
    # Neither cycle holds a client or a recipe module: not a violation.
    assert violations(pkg) == []


# --- the generator's strictness ------------------------------------------------------


def _load_unasync() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_unasync_script", ROOT / "scripts" / "unasync.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unasync_fails_on_a_pattern_that_matches_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unasync = _load_unasync()
    used: Counter[int] = Counter()
    unasync.unasync_text("async def f():\n    await g()\n", "s", used)
    dead = unasync.unused_patterns(used)
    assert (r"\basync def\b", "def") not in dead
    assert (r"\b__aenter__\b", "__enter__") in dead
    # On the real sources every pattern is alive, and a dead one fails the run.
    dead_pattern = (r"\bno_source_says_this\b", "x")
    monkeypatch.setattr(unasync, "SUBSTITUTIONS", [*unasync.SUBSTITUTIONS, dead_pattern])
    monkeypatch.setattr(
        unasync, "_COMPILED", [*unasync._COMPILED, (re.compile(dead_pattern[0]), dead_pattern[1])]
    )
    monkeypatch.setattr(unasync, "generated_files", lambda: pytest.fail("must not get this far"))
    assert unasync.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "no_source_says_this" in out and "matched nothing" in out
    assert "__aenter__" not in out  # only the dead pattern is reported


if __name__ == "__main__":  # print the cycles of a checkout: python tests/test_layers.py [dir]
    import sys

    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR
    package = read_package(directory)
    for component in import_cycles(package):
        print(f"cycle ({len(component)} modules): {', '.join(component)}")
        for edge in cycle_edges(package, component):
            print(f"    {edge}")
    for line in violations(package):
        print(f"violation: {line}")
