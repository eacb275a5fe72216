"""Shared fixtures: the repo root, the real data folders (skipped when absent), tiny datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SYNTHDRIVE_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def camvid() -> Path:
    path = SHARED_DATA / "camvid"
    if not (path / "train" / "images").is_dir():
        pytest.skip(f"real CamVid not found at {path} (set SYNTHDRIVE_SHARED_DATA)")
    return path


@pytest.fixture
def gtsrb_dev() -> Path:
    path = SHARED_DATA / "gtsrb_dev"
    if not (path / "stop").is_dir():
        pytest.skip(f"real GTSRB dev set not found at {path} (set SYNTHDRIVE_SHARED_DATA)")
    return path


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> str:
    """An isolated MLflow store so tests never write into the repo's mlflow.db."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def make_folder_dataset(root: Path, n: int = 3, size=(24, 32), num_classes: int = 11, seed: int = 0):
    """A tiny images/ + labels/ folder in CamVid's split layout (train split)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{'0001TP' if i == 0 else '0016E5'}_{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), np.uint8)).save(root / "train" / "images" / name)
        Image.fromarray(rng.integers(0, num_classes, size, np.uint8)).save(root / "train" / "labels" / name)
    return root


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def workdir(tmp_path, tracking_store):
    """A scratch copy of the pipeline (params.yaml, dvc.yaml, stages/) to run stage scripts in.

    ``workdir.run("collect", {"collect": {...}})`` patches params.yaml and runs the stage script;
    it returns the CompletedProcess (stdout/stderr captured).
    """
    import shutil
    import subprocess
    import sys

    import yaml

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "params.yaml", work)
    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "stages", work / "stages")

    class Work:
        path = work

        def set_params(self, overrides: dict) -> None:
            params = yaml.safe_load((work / "params.yaml").read_text())
            (work / "params.yaml").write_text(yaml.safe_dump(deep_update(params, overrides)))

        def run(self, stage: str, overrides: dict | None = None, check: bool = True):
            if overrides:
                self.set_params(overrides)
            env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
            proc = subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600)
            if check and proc.returncode != 0:
                raise AssertionError(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
            return proc

    return Work()


def one_line(excinfo, *names) -> str:
    """The message of a pytest.raises ``excinfo``, checked to be one line naming ``names``."""
    text = str(excinfo.value)
    assert "\n" not in text, text
    for name in names:
        assert str(name) in text, f"{name} not named in: {text}"
    return text
