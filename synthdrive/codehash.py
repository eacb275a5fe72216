"""A fingerprint of the code that trains a model, stored in its resume checkpoints.

DVC reruns a training stage when its code changes, but a checkpoint matched on settings and
data alone would then be resumed (a finished one: zero steps) and the old model exported again.
``code_fingerprint`` hashes the source files the training runs: the static import closure of the
given modules (``import`` / ``from ... import`` anywhere in a file, packages' ``__init__`` files
included: the rule tests/test_dvc_deps.py uses for dvc.yaml's deps) and the data files those read
(synthdrive/label_spaces.yaml). Static, not "what sys.modules holds": every rank of a torchrun
launch, a rerun and a test process get the same set, however much else they imported.
Not in it: modules imported only by name (a registry of lazy backends: one backend's edit does
not restart another's training) and the stage scripts, which only hand the trainer its settings
and data (both fingerprinted beside the code) and evaluate the result: a checkpoint written by
library code (a test, a notebook) resumes in the stage, and an edit of the health check or the
plots re-evaluates the finished model instead of retraining it.
"""
from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

# The checkout whose synthdrive/ is hashed (tests point it at an edited copy).
ROOT = Path(__file__).resolve().parents[1]
# Data files a module reads at run time: part of the code that trains.
DATA_FILES = {"synthdrive/labels.py": ["synthdrive/label_spaces.yaml"]}
# The top-level package marker (a docstring), left out as in dvc.yaml's deps.
IGNORED = {"synthdrive/__init__.py"}


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, lazy: bool = False) -> set[str]:
    """synthdrive modules ``path`` imports (absolute or relative, at any depth of the file);
    ``lazy``: also modules named in string constants (backends imported by name)."""
    package = ".".join(path.resolve().relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # a name may be a submodule
        elif lazy and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"synthdrive(\.\w+)+", node.value):
            names.add(node.value)
    return {n for n in names if n.split(".")[0] == "synthdrive"}


def closure(*modules: str, script: Path | None = None, lazy: bool = False) -> list[str]:
    """Sorted ROOT-relative files of ``modules`` and every synthdrive module they import,
    transitively, plus the data files those read. ``script``: also what that file (a stage
    script, itself not included) imports; ``lazy``: follow backends imported by name too
    (what dvc.yaml's deps must cover, tests/test_dvc_deps.py)."""
    seen: set[Path] = set()
    todo = list(modules) + (sorted(_imports(script, lazy)) if script else [])
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            file = _module_file(".".join(parts[:i]))
            if file and file not in seen:
                seen.add(file)
                todo.extend(_imports(file, lazy))
    files = {str(f.relative_to(ROOT)) for f in seen} - IGNORED
    return sorted(files | {d for f in files for d in DATA_FILES.get(f, []) if (ROOT / d).is_file()})


def code_fingerprint(*modules: str) -> str:
    """sha256 (16 hex digits) over the sorted relative paths and contents of ``closure(*modules)``."""
    digest = hashlib.sha256()
    for rel in closure(*modules):
        digest.update(rel.encode() + b"\0" + hashlib.sha256((ROOT / rel).read_bytes()).digest())
    return digest.hexdigest()[:16]
