"""The import contract: the package layering of dsmount (see dsmount/__init__.py), checked on
the source with `ast`, every import counted (module level, inside functions, TYPE_CHECKING).

Rules: storage and shared are the bottom and import nothing above them; control is transport
only, a floor below the node and the workspace, and imports neither; the node side and the
workspace side never import each other (the workspace reaches a daemon only through the
control client); the cache never imports the fs core; only the FUSE adapter imports pyfuse3;
the access rules are pure; the warm jobs use the core's warming facade, not its parts. No
module imports another's private name, and no modules import each other in a circle (not
even under TYPE_CHECKING). What differs between storage kinds is a declared capability of the
backend: the node and control never test `kind`, `isinstance(..., *Backend)` or
`getattr(backend, ...)`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dsmount"

# (module prefix the rule applies to, forbidden import prefixes, allowed exceptions)
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("dsmount.errors", ("dsmount.",), ()),
    ("dsmount.shared", ("dsmount.",), ("dsmount.errors", "dsmount.shared")),
    ("dsmount.storage", ("dsmount.",), ("dsmount.errors", "dsmount.shared", "dsmount.storage")),
    ("dsmount.node", ("dsmount.workspace", "dsmount.cli", "dsmount.api"), ()),
    ("dsmount.node.cache", ("dsmount.node.fs", "dsmount.control"), ()),
    ("dsmount.workspace", ("dsmount.node", "dsmount.cli", "dsmount.control.server"), ()),
    # control/ is transport only, a floor below the node and the workspace.
    ("dsmount.control", ("dsmount.node", "dsmount.workspace", "dsmount.cli", "dsmount.api"), ()),
    ("dsmount.api", ("dsmount.",), ("dsmount.workspace",)),
    # Pure rules: a peer's identity in, a decision out; nothing of the node, no storage.
    ("dsmount.node.access", ("dsmount.",),
     ("dsmount.errors", "dsmount.control.peer", "dsmount.control.protocol")),
    # Warming is an operation of the core (node/fs/warming.py), not a reach into its parts.
    ("dsmount.node.warm", ("dsmount.node.fs.lookup", "dsmount.node.fs.inodes",
                           "dsmount.node.fs.metadata", "dsmount.node.fs.reads",
                           "dsmount.node.cache"), ()),
]
PYFUSE3_ONLY_IN = "dsmount.node.fuse_adapter"

# Import circles that remain; this list only shrinks (empty now): a new circle fails the test,
# and so does an entry here that no longer is one.
KNOWN_CIRCLES: set[frozenset[str]] = set()
# Imports of another module's private name that remain (same shrinking rule; none now).
KNOWN_PRIVATE_IMPORTS: set[str] = set()
# Arrows that were circles once (a class cut into two files), forbidden by name so a message
# says which split came back.
FORBIDDEN_ARROWS = [
    ("dsmount.storage.base", "dsmount.storage.writes"),
    ("dsmount.storage.azure.blob_upload", "dsmount.storage.azure.blob"),
    ("dsmount.storage.azure.blob_client", "dsmount.storage.azure.blob"),
    ("dsmount.storage.azure.fileshare_upload", "dsmount.storage.azure.fileshare"),
    ("dsmount.storage.azure.fileshare_client", "dsmount.storage.azure.fileshare"),
    ("dsmount.storage.azure.rest", "dsmount.storage.azure.backend"),
]
# Test doubles live in tests/support/, never in the product.
TEST_DOUBLES = ("memory", "memory_writes", "local_write", "faulty")
# Where a kind check is forbidden: the node and control decide by `Backend.capabilities`.
NO_KIND_CHECKS_IN = ("dsmount.node", "dsmount.control")
# The core's parts the warm jobs must not touch (they ask `FileSystem.warming`).
CORE_PARTS = frozenset({"lookups", "metadata", "inodes", "reads", "dirs", "mutations"})


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from dsmount.node import fs` imports dsmount.node.fs
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, prefix: str) -> bool:
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        imported = imports_of(path, module)
        for name in sorted(imported):
            if _under(name, "pyfuse3") and module != PYFUSE3_ONLY_IN:
                out.append(f"{module} imports pyfuse3 (only {PYFUSE3_ONLY_IN} may)")
            for applies, forbidden, allowed in RULES:
                if not _under(module, applies) or _under(name, module):
                    continue
                if any(_under(name, f) or (f.endswith(".") and name.startswith(f))
                       for f in forbidden) and not any(_under(name, a) for a in allowed):
                    out.append(f"{module} imports {name} (rule for {applies})")
    return sorted(set(out))


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (package imports of submodules too)."""
    found = modules(root)
    return {m: {n for n in imports_of(p, m) if n in found and n != m} for m, p in found.items()}


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def private_imports(root: Path) -> set[str]:
    """`from a.b import _name` across modules: a private name has one home."""
    out: set[str] = set()
    for module, path in modules(root).items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.add(f"{module} imports {base}.{alias.name}")
    return out


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def kind_checks(root: Path) -> list[str]:
    """Places where the node or control tell storage kinds apart by name or type."""
    out: list[str] = []
    for module, path in modules(root).items():
        if not any(_under(module, p) for p in NO_KIND_CHECKS_IN):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{module}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if (isinstance(side, ast.Attribute) and side.attr == "kind"
                            and "backend" in _text(side.value).lower()):
                        out.append(f"{where} compares {_text(side)}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                args = node.args
                if (node.func.id == "isinstance" and len(args) == 2
                        and _text(args[1]).endswith("Backend")):
                    out.append(f"{where} isinstance(..., {_text(args[1])})")
                if (node.func.id in ("getattr", "hasattr") and args
                        and "backend" in _text(args[0]).lower()):
                    out.append(f"{where} {node.func.id}({_text(args[0])}, ...)")
    return out


def core_part_reaches(root: Path, module: str = "dsmount.node.warm") -> list[str]:
    """Uses of the core's parts (`core.lookups`, `fs.reads`, ...) in `module`."""
    path = modules(root).get(module)
    if path is None:
        return []
    return [f"{module}:{n.lineno} uses {_text(n)}" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Attribute) and n.attr in CORE_PARTS]


def test_the_package_keeps_its_layering() -> None:
    assert violations(PACKAGE) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    found = circles(import_graph(PACKAGE))
    new = sorted(sorted(c) for c in found - KNOWN_CIRCLES)
    assert new == [], "import circles (break them, e.g. by a module both import)"
    gone = sorted(sorted(c) for c in KNOWN_CIRCLES - found)
    assert gone == [], "no longer circles: delete them from KNOWN_CIRCLES"
    assert all(all(_under(m, "dsmount.storage") for m in c) for c in KNOWN_CIRCLES)


def test_no_module_imports_another_modules_private_names() -> None:
    found = private_imports(PACKAGE)
    assert sorted(found - KNOWN_PRIVATE_IMPORTS) == []
    assert sorted(KNOWN_PRIVATE_IMPORTS - found) == [], "delete from KNOWN_PRIVATE_IMPORTS"


def test_kinds_are_told_apart_by_capabilities_not_by_name_or_type() -> None:
    assert kind_checks(PACKAGE) == []


def test_warming_asks_the_core_and_does_not_reach_into_its_parts() -> None:
    assert core_part_reaches(PACKAGE) == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init} has no docstring saying what it holds"


def test_no_module_grows_past_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def test_only_a_handful_of_modules_sit_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "api.py", "errors.py"]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("storage/leak.py", "from dsmount.node.fs.core import FileSystem\n",
         "dsmount.storage.leak imports dsmount.node.fs.core"),
        ("storage/lazy.py", "def f():\n    import dsmount.workspace.registry\n",
         "dsmount.storage.lazy imports dsmount.workspace.registry"),
        ("workspace/peek.py", "from ..node import daemon\n",
         "dsmount.workspace.peek imports dsmount.node.daemon"),
        ("node/cache/up.py", "from dsmount.node.fs import core\n",
         "dsmount.node.cache.up imports dsmount.node.fs"),
        ("node/fs/kernel.py", "import pyfuse3\n", "dsmount.node.fs.kernel imports pyfuse3"),
        ("control/handler.py", "from dsmount.node.ops import NodeOps\n",
         "dsmount.control.handler imports dsmount.node.ops"),
        ("control/typed.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from dsmount.workspace import api\n",
         "dsmount.control.typed imports dsmount.workspace.api"),
        ("node/access.py", "from dsmount.node.fs.core import FileSystem\n",
         "dsmount.node.access imports dsmount.node.fs.core"),
        ("node/warm.py", "from dsmount.node.fs.lookup import join\n",
         "dsmount.node.warm imports dsmount.node.fs.lookup"),
    ],
)
def test_the_contract_fails_when_broken(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    root = tmp_path / "dsmount"
    target = root / module
    target.parent.mkdir(parents=True)
    for parent in [target.parent, *target.parent.parents]:
        if parent == tmp_path:
            break
        (parent / "__init__.py").write_text('"""x"""\n')
    target.write_text(source)
    found = violations(root)
    assert any(v.startswith(expected) for v in found), found


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "dsmount"
    for module, source in files.items():
        target = root / module
        target.parent.mkdir(parents=True, exist_ok=True)
        for parent in [target.parent, *target.parent.parents]:
            if parent == tmp_path:
                break
            (parent / "__init__.py").write_text('"""x"""\n')
        target.write_text(source)
    return root


def test_a_circle_is_found_even_under_type_checking(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "node/fs/a.py": "from dsmount.node.fs import b\n",
        "node/fs/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from dsmount.node.fs.c import C\n",
        "node/fs/c.py": "def f():\n    from .a import A\n",
        "node/fs/d.py": "from dsmount.node.fs import a\n",
    })
    assert circles(import_graph(root)) == {
        frozenset({"dsmount.node.fs.a", "dsmount.node.fs.b", "dsmount.node.fs.c"})}


def test_private_imports_kind_checks_and_reaches_are_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "control/server.py": "from dsmount.control.service import _groups_of\n",
        "node/fs/reads.py": "def f(ds, b):\n"
                            "    if ds.backend.kind != 'local': pass\n"
                            "    g = getattr(ds.backend, 'locate', None)\n"
                            "    return isinstance(b, LocalBackend)\n",
        "node/warm.py": "def f(core):\n    return core.lookups, core.warming\n",
    })
    assert private_imports(root) == {
        "dsmount.control.server imports dsmount.control.service._groups_of"}
    found = kind_checks(root)
    assert len(found) == 3 and all(f.startswith("dsmount.node.fs.reads:") for f in found)
    assert core_part_reaches(root) == ["dsmount.node.warm:2 uses core.lookups"]


def test_the_arrows_of_former_mixin_halves_stay_gone() -> None:
    found = modules(PACKAGE)
    back = [(a, b) for a, b in FORBIDDEN_ARROWS if a in found and b in imports_of(found[a], a)]
    assert back == []


def test_no_test_double_ships_in_the_product() -> None:
    names = {p.stem for p in (PACKAGE / "storage").rglob("*.py")}
    assert names.isdisjoint(TEST_DOUBLES)
    for path in PACKAGE.rglob("*.py"):
        assert not any(_under(n, "tests") for n in imports_of(path, module_name(path, PACKAGE)))
