"""The optional dependencies work alone: `pip install -e '.[test]'` brings everything the tests
import, and each other extra brings what its own tests import.

Two tests: a quick static one (every import in tests/ resolves to the standard library, the
project, or a distribution the package or its `[test]` extra declares; a module a test asks for
with `pytest.importorskip` belongs to some extra), and a real one that creates a fresh virtual
environment, installs the package with only `[test]` through pip's ordinary resolution (the
machine's pip configuration and cache make it quick) and collects the whole suite there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
# The repository's own top-level packages and namespace directories (dsmount, tests, and
# scripts, which holds the benchmark package) are first party: they are importable from the
# repository root, where the suite runs.
FIRST_PARTY = {p.name for p in REPO.iterdir() if p.is_dir() and (
    (p / "__init__.py").exists() or any(p.glob("*/__init__.py")))}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        assert match, f"unparsable requirement {req!r} in pyproject.toml"
        names.add(_normalise(match.group(1)))
    return names


def _project() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level modules imported, modules asked for with pytest.importorskip) of a file."""
    tree = ast.parse(path.read_text(), str(path))
    imported: set[str] = set()
    optional: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "importorskip" and node.args
              and isinstance(node.args[0], ast.Constant)):
            optional.add(str(node.args[0].value).split(".")[0])
    return imported, optional


def _third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


def _distributions(module: str, providers: dict[str, list[str]]) -> set[str]:
    """The distributions that provide `module` here; one not installed in this environment (an
    optional extra such as torch) is taken to come from the distribution of its own name."""
    return {_normalise(d) for d in providers.get(module, [])} or {_normalise(module)}


def test_every_test_import_is_declared_by_the_package_or_its_test_extra() -> None:
    project = _project()
    extras = project["optional-dependencies"]
    declared = _requirement_names(project["dependencies"]) | _requirement_names(extras["test"])
    in_some_extra = set().union(*(_requirement_names(reqs) for reqs in extras.values()))
    providers = importlib.metadata.packages_distributions()
    undeclared: dict[str, list[str]] = {}
    not_in_extra: dict[str, list[str]] = {}
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 50, "the test tree was not found"
    for path in files:
        imported, optional = _imports(path)
        where = str(path.relative_to(REPO))
        for module in sorted(_third_party(imported)):
            dists = _distributions(module, providers)
            if not dists & declared:
                undeclared.setdefault(module, []).append(where)
        for module in sorted(_third_party(optional)):
            dists = _distributions(module, providers)
            if not dists & in_some_extra:
                not_in_extra.setdefault(module, []).append(where)
    assert not undeclared, (
        "tests import modules that neither the package nor its [test] extra declares "
        f"(add them to [project.optional-dependencies] test): {undeclared}"
    )
    assert not not_in_extra, f"importorskip of modules no extra brings: {not_in_extra}"


@pytest.mark.install
def test_test_extra_alone_collects_the_whole_suite(tmp_path: Path) -> None:
    """A fresh virtual environment (no system site-packages) with only `.[test]`: pip resolves
    the extra itself, and `pytest --collect-only` finds every test without an error."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-e", f"{REPO}[test]"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert install.returncode == 0, f"pip install -e .[test] failed:\n{install.stderr[-4000:]}"
    # The extra alone, not whatever the development environment holds: no other
    # site-packages on the fresh interpreter's path.
    probe = subprocess.run([str(python), "-c", "import sys; print('\\n'.join(sys.path))"],
                           env=env, capture_output=True, text=True, timeout=120, check=True)
    outside = [p for p in probe.stdout.splitlines()
               if "-packages" in p and not p.startswith(str(venv))]
    assert outside == [], f"the fresh environment sees other site-packages: {outside}"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()

    collect = subprocess.run(
        [str(python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    tail = collect.stdout[-3000:] + collect.stderr[-3000:]
    assert collect.returncode == 0, f"collection failed in the [test]-only environment:\n{tail}"
    assert "error" not in collect.stdout.splitlines()[-1].lower(), tail
    collected = re.search(r"(\d+) tests? collected", collect.stdout)
    assert collected and int(collected.group(1)) > 500, tail
