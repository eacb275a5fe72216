"""Shared fixtures, one per kind of scratch setup: the stage-run workdir (`workdir`, the one
stage runner, in a subprocess or in this process), scratch git + DVC repos (`dvc_repo`; and
`tiny_pipeline`, the whole pipeline reproduced once per session), the tiny dataset builder
(`tiny_dataset`; the generator tests' `raw` / `train_data` are built with it; `real_sets` are
street images of the same drawing), plus the repo root, the real data folders (skipped when
absent) and an isolated MLflow store. Implementations and plain helpers: tests/helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import (  # noqa: F401  (re-exported: tests.conftest's names of before)
    GEN_SIZE,
    REPO,
    ScratchRepo,
    Workdir,
    deep_update,
    make_dataset,
    make_folder_dataset,
    one_line,
    street_frames,
    truth,
)

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


# --- scratch copies of the repo --------------------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, tracking_store, monkeypatch) -> Workdir:
    """A scratch copy of the pipeline (params.yaml, dvc.yaml, stages/) to run stage scripts in:
    ``workdir.run(stage, overrides)`` in a subprocess, ``in_process=True`` in this one
    (tests.helpers.Workdir)."""
    return Workdir(tmp_path / "work", monkeypatch, tracking_store)


@pytest.fixture
def dvc_repo(tmp_path):
    """Makes scratch repos: ``dvc_repo(root=tmp_path / "repo", copy=..., files=..., params=...)``
    (tests.helpers.ScratchRepo), then ``.init(...)`` for git / DVC, ``.dvc(...)``, ``.sh(...)``."""
    def make(root: Path | None = None, **kwargs) -> ScratchRepo:
        return ScratchRepo(root or tmp_path / "repo", **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> tuple[ScratchRepo, object]:
    """`dvc repro` of the whole pipeline at tiny size (tests/tiny_params.yaml) in a scratch git
    copy of the repo, once per session: (the repo, the first repro's CompletedProcess). Tests
    that change it put it back."""
    pipeline = ScratchRepo(tmp_path_factory.mktemp("pipeline") / "repo", copy="all", tiny=True)
    pipeline.init(dvc=False)  # the copy has the repo's .dvc/
    return pipeline, pipeline.dvc("repro")


# --- tiny datasets ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_dataset():
    """The tiny dataset builder: ``tiny_dataset(root, counts, conditions, size=..., ...)`` writes
    street-like camvid11 frames and returns the Dataset (tests.helpers.make_dataset);
    ``conditions_file=True`` also writes conditions.jsonl beside it, as classify would."""
    return make_dataset


@pytest.fixture(scope="module")
def raw(tmp_path_factory, tiny_dataset):
    """The generator and synthesis tests' dataset: 24 train / 6 val frames at GEN_SIZE."""
    return tiny_dataset(tmp_path_factory.mktemp("raw") / "raw")


@pytest.fixture(scope="module")
def train_data(raw):
    from synthdrive.generate.data import load_split

    return load_split(raw, "train", *GEN_SIZE, truth(raw))


@pytest.fixture(scope="module")
def real_sets():
    """Two sets of 24 day-time street images (other seeds: other frames)."""
    return street_frames(24, 0), street_frames(24, 1)
