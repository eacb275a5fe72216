"""Scale-out paths of the README: data through a DVC remote, MLflow through a tracking server."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synthdrive.dataset import Dataset
from tests.test_sweep import _tiny_repo, mlflow_server, rest


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DVC_", "MLFLOW_TRACKING_URI", "SYNTHDRIVE_RUN_KEY"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", DVC_NO_ANALYTICS="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    return env


def _run(cwd: Path, env: dict, *cmd: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-1500:]}{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_data_round_trips_through_a_dvc_remote_and_runs_log_to_a_tracking_server(tmp_path):
    """`dvc push` to a remote, a fresh clone's `dvc pull` gets the same data; the stage logged its
    parent and child runs through `mlflow server` (MLFLOW_TRACKING_URI=http://...)."""
    root, clone, remote = tmp_path / "repo", tmp_path / "clone", tmp_path / "remote"
    root.mkdir()
    _tiny_repo(root)
    env = _env()
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["dvc", "remote", "add", "-d", "store", str(remote)]):
        _run(root, env, *cmd)
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", env) as url:
        _run(root, {**env, "MLFLOW_TRACKING_URI": url}, "dvc", "repro", "collect")
        found = rest(url, "runs/search", {"experiment_ids": [
            rest(url, "experiments/get-by-name", {"experiment_name": "synthdrive"},
                 get=True)["experiment"]["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in found]
    assert sorted(t["role"] for t in tags) == ["pipeline", "stage"]
    assert next(t for t in tags if t["role"] == "stage")["stage"] == "collect"
    assert not (root / "mlflow.db").exists(), "logged locally instead of to the server"

    _run(root, env, "git", "add", "-A")
    _run(root, env, "git", "commit", "-qm", "collected")
    _run(root, env, "dvc", "push")
    _run(tmp_path, env, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "data" / "raw").exists()
    _run(clone, env, "dvc", "pull")
    pulled, original = Dataset(clone / "data" / "raw"), Dataset(root / "data" / "raw")
    assert pulled.records == original.records and len(pulled) == 3
    pulled.validate()
    shutil.rmtree(clone)
