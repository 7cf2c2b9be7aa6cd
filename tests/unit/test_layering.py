"""The import contract: the package layering of dsmount (see dsmount/__init__.py), checked on
the source with `ast`, every import counted (module level, inside functions, TYPE_CHECKING).

Rules: storage and shared are the bottom and import nothing above them; the node side and the
workspace side never import each other (the workspace reaches a daemon only through the
control client); the cache never imports the fs core; only the FUSE adapter imports pyfuse3.
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
]
PYFUSE3_ONLY_IN = "dsmount.node.fuse_adapter"


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


def test_the_package_keeps_its_layering() -> None:
    assert violations(PACKAGE) == []


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
