"""Scale-out paths of the README: data through a DVC remote, MLflow through a tracking server.

In the default run (about 2 minutes under load, most of it `mlflow server` starting): nothing
cheaper covers a remote or a tracking server."""
from __future__ import annotations

import shutil

from synthdrive.dataset import Dataset
from tests.helpers import mlflow_server, rest, tiny_headline_repo


def test_data_round_trips_through_a_dvc_remote_and_runs_log_to_a_tracking_server(tmp_path):
    """`dvc push` to a remote, a fresh clone's `dvc pull` gets the same data; the stage logged its
    parent and child runs through `mlflow server` (MLFLOW_TRACKING_URI=http://...)."""
    root, clone, remote = tmp_path / "repo", tmp_path / "clone", tmp_path / "remote"
    repo = tiny_headline_repo(root).init()
    repo.dvc("remote", "add", "-d", "store", str(remote))
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", repo.env) as url:
        repo.dvc("repro", "collect", env={"MLFLOW_TRACKING_URI": url})
        found = rest(url, "runs/search", {"experiment_ids": [
            rest(url, "experiments/get-by-name", {"experiment_name": "synthdrive"},
                 get=True)["experiment"]["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in found]
    assert sorted(t["role"] for t in tags) == ["pipeline", "stage"]
    assert next(t for t in tags if t["role"] == "stage")["stage"] == "collect"
    assert not (root / "mlflow.db").exists(), "logged locally instead of to the server"

    repo.commit("collected")
    repo.dvc("push")
    repo.sh("git", "clone", "-q", str(root), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "raw").exists()
    repo.dvc("pull", cwd=clone)
    pulled, original = Dataset(clone / "data" / "raw"), Dataset(root / "data" / "raw")
    assert pulled.records == original.records and len(pulled) == 3
    pulled.validate()
    shutil.rmtree(clone)
