import mlflow
import pytest

from synthdrive import tracking


def test_stages_of_one_execution_share_a_parent(tracking_store, monkeypatch):
    monkeypatch.setenv("SYNTHDRIVE_RUN_KEY", "test:1:1")
    with tracking.stage_run("a", {"x": {"y": 1}}) as run_a:
        run_a.log_metrics({"m": {"n": 2.0}, "skip": "text"})
        run_a.log_parent_metrics({"headline": 0.5})
    with tracking.stage_run("b") as run_b:
        pass
    assert run_a.parent_id == run_b.parent_id
    client = mlflow.MlflowClient(tracking_store)
    a = client.get_run(run_a.run_id)
    assert a.data.params == {"x.y": "1"} and a.data.metrics == {"m.n": 2.0}
    assert a.data.tags["stage"] == "a" and a.info.status == "FINISHED"
    assert client.get_run(run_a.parent_id).data.metrics["headline"] == 0.5


def test_a_new_execution_gets_a_new_parent(tracking_store, monkeypatch):
    parents = []
    for key in ("k:1:1", "k:2:2"):
        monkeypatch.setenv("SYNTHDRIVE_RUN_KEY", key)
        with tracking.stage_run("a") as run:
            parents.append(run.parent_id)
    assert parents[0] != parents[1]


def test_failed_stage_marks_its_run_failed(tracking_store, monkeypatch):
    monkeypatch.setenv("SYNTHDRIVE_RUN_KEY", "fail:1:1")
    with pytest.raises(ValueError):
        with tracking.stage_run("a") as run:
            raise ValueError("stage broke")
    assert mlflow.MlflowClient(tracking_store).get_run(run.run_id).info.status == "FAILED"


def test_unreachable_store_warns_and_the_stage_still_runs(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a_file/mlflow.db")
    ran = False
    with pytest.warns(UserWarning, match="runs untracked"):
        with tracking.stage_run("a", {"p": 1}) as run:
            run.log_metrics({"m": 1.0})
            run.log_artifact(tmp_path)
            ran = True
    assert ran


def test_default_store_is_an_absolute_sqlite_path_under_the_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_sigterm_leaves_no_partial_output_and_closes_the_run(tmp_path, tracking_store):
    """A stage killed with SIGTERM cleans up like a failed one."""
    import signal
    import subprocess
    import sys
    import textwrap

    import mlflow

    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import time
        from synthdrive import tracking
        from synthdrive.dataset import atomic_dir
        from synthdrive.errors import run_stage

        def main():
            with tracking.stage_run("slow_stage") as run, atomic_dir("out") as tmp:
                (tmp / "part.txt").write_text("half")
                print("ready", flush=True)
                time.sleep(60)

        run_stage(main)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))] == []
    mlflow.set_tracking_uri(tracking_store)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'slow_stage'")
    assert list(runs["status"]) == ["FAILED"]


def test_a_stage_run_logs_the_params_dvc_yaml_declares(repo, monkeypatch):
    """One list (dvc.yaml's params:) decides what reruns a stage and what its run logs."""
    import yaml

    monkeypatch.chdir(repo)
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["evaluate"]["params"]
    got = tracking.declared_params("evaluate")
    assert list(got) == declared
    assert got["evaluate"] == yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]
    assert set(tracking.declared_params("train_segmenter@real_synth-0")) >= {"segmenter.train", "labels"}
    assert tracking.declared_params("not_a_stage") == {}
