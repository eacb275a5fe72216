"""Every stage's deps in dvc.yaml cover the synthdrive code its script imports (DESIGN.md:
"rebuilds only what changed" must hold for code too) and every params section it reads."""
from __future__ import annotations

import pytest
import yaml

from synthdrive.codehash import closure
from tests.conftest import REPO

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
    missing = [f for f in closure(script=REPO / script, lazy=True)
               if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"stage {name}: dvc.yaml deps lack {missing} (imported by {script})"


def test_closure_follows_transitive_imports():
    files = closure(script=REPO / "stages/collect.py", lazy=True)
    assert "synthdrive/dataset.py" in files and "synthdrive/errors.py" in files
    assert "synthdrive/label_spaces.yaml" in files
    assert "synthdrive/collect/carla.py" in files  # a backend imported by name
