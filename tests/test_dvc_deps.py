"""Every stage's deps in dvc.yaml cover the synthdrive code its script imports (DESIGN.md:
"rebuilds only what changed" must hold for code too) and every params section it reads."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

# Data files read by a module at run time: a change to them must rerun the stage as well.
DATA_FILES = {"synthdrive/labels.py": ["synthdrive/label_spaces.yaml"]}
# The top-level package marker only holds a docstring; listing it everywhere would rerun all.
IGNORED = {"synthdrive/__init__.py"}


def _module_file(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    names = set()
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"synthdrive(\.\w+)+", node.value):
            names.add(node.value)  # lazily imported backends (importlib by name)
    return {n for n in names if n.split(".")[0] == "synthdrive"}


def import_closure(script: Path) -> set[str]:
    """Repo-relative files of synthdrive modules reachable from ``script`` by static imports."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imports(todo.pop()):
            parts = name.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ too
            for i in range(1, len(parts) + 1):
                f = _module_file(".".join(parts[:i]))
                if f and f not in seen:
                    seen.add(f)
                    todo.append(f)
    files = {str(f.relative_to(REPO)) for f in seen} - IGNORED
    return files | {d for f in files for d in DATA_FILES.get(f, [])}


def _stages():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        body = stage.get("do", stage)
        yield name, body


@pytest.mark.parametrize("name,stage", list(_stages()), ids=[n for n, _ in _stages()])
def test_stage_deps_cover_its_imports(name, stage):
    cmd = stage["cmd"]
    script = next(tok for tok in cmd.split() if tok.startswith("stages/") and tok.endswith(".py"))
    deps = [str(d) for d in stage.get("deps", [])]
    assert script in deps, f"{name}: dvc.yaml deps must list its script {script}"
    missing = [f for f in sorted(import_closure(REPO / script))
               if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"stage {name}: dvc.yaml deps lack {missing} (imported by {script})"


def test_closure_follows_transitive_imports():
    closure = import_closure(REPO / "stages/collect.py")
    assert "synthdrive/dataset.py" in closure and "synthdrive/errors.py" in closure
    assert "synthdrive/label_spaces.yaml" in closure
