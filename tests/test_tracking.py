import json
import subprocess
import sys

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


def test_declared_params_parse_params_yaml_once_per_process(repo, tmp_path, monkeypatch):
    """declared_params (every stage_run) and the parent run share one parse of params.yaml until
    the file changes."""
    import shutil

    import yaml

    from synthdrive import params as params_mod

    shutil.copy(repo / "params.yaml", tmp_path)
    shutil.copy(repo / "dvc.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    loads = []
    real_load = params_mod.load
    monkeypatch.setattr(params_mod, "load", lambda *a, **k: loads.append(k.get("file")) or real_load(*a, **k))
    first = tracking.declared_params("evaluate")
    assert tracking.declared_params("train_segmenter@real-0") and tracking.loaded_params()["evaluate"]
    assert tracking.declared_params("evaluate") == first and len(loads) == 1
    first["evaluate"]["changed"] = True  # a caller's edit does not reach the cache
    assert "changed" not in tracking.declared_params("evaluate")["evaluate"]

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["evaluate"]["batch_size"] = params["evaluate"].get("batch_size", 1) + 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    got = tracking.declared_params("evaluate")
    assert len(loads) == 2 and got["evaluate"]["batch_size"] == params["evaluate"]["batch_size"]


def _rwlock(root, pids):
    lock = root / ".dvc" / "tmp" / "rwlock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"write": {f"{root}/out{i}": {"pid": pid, "cmd": "dvc repro"}
                                          for i, pid in enumerate(pids)}, "read": {}}))


def test_the_parent_key_comes_from_the_dvc_process_in_rwlock(tmp_path, monkeypatch):
    import psutil

    for var in ("SYNTHDRIVE_RUN_KEY", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("DVC_STAGE", raising=False)
    me = psutil.Process()
    assert tracking._pipeline_key() == (f"manual:{me.pid}:{me.create_time():.0f}", "manual")

    monkeypatch.setenv("DVC_STAGE", "a")
    with pytest.warns(UserWarning, match="no running DVC process"):
        assert tracking._pipeline_key()[1] == "manual"

    parent = me.parent()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the ancestor wins over another live DVC process of the same workspace
        _rwlock(tmp_path, [other.pid, parent.pid])
        assert tracking._pipeline_key() == (f"repro:{parent.pid}:{parent.create_time():.0f}", "repro")
        monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
        assert tracking._pipeline_key() == (f"exp-1:{parent.pid}:{parent.create_time():.0f}", "exp run")
        # no ancestor there: the one live pid, never a dead one
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _rwlock(tmp_path, [other.pid, dead.pid])
        assert tracking._pipeline_key()[0].startswith(f"exp-1:{other.pid}:")
        # a queued experiment's stage runs in a temp copy with its own rwlock; DVC_ROOT names the repo
        copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"
        (copy / "sub").mkdir(parents=True)
        _rwlock(copy, [parent.pid])
        _rwlock(tmp_path, [])
        monkeypatch.chdir(copy / "sub")
        assert tracking._pipeline_key() == (f"exp-1:{parent.pid}:{parent.create_time():.0f}", "queued")
        monkeypatch.setenv("SYNTHDRIVE_RUN_KEY", "given")
        assert tracking._pipeline_key() == ("given", "exp run")
    finally:
        other.kill()
        other.wait()


KEY_STAGE = """
import json, sys
from synthdrive import tracking
key, kind = tracking._pipeline_key()
json.dump({"key": key, "kind": kind}, open(sys.argv[1], "w"))
"""


def test_stages_of_one_dvc_run_share_a_key_and_each_run_has_its_own(dvc_repo, tmp_path):
    """A real `dvc repro` (twice) and `dvc exp run` of a two-stage pipeline: both stages of one
    run find the same DVC process in DVC's rwlock; the next run is another process."""
    import yaml

    root = tmp_path / "repo"
    repo = dvc_repo(root, copy=("synthdrive",), env={"PYTHONPATH": str(root)}, files={
        "key.py": KEY_STAGE, "params.yaml": "n: 1\n", "dvc.yaml": yaml.safe_dump({"stages": {
            "a": {"cmd": "python key.py a.json", "deps": ["key.py"], "params": ["n"], "outs": ["a.json"]},
            "b": {"cmd": "python key.py b.json", "deps": ["a.json"], "outs": ["b.json"]}}})})

    def sh(*cmd):
        repo.sh(*cmd, timeout=300)

    def keys():
        return [json.loads((root / f).read_text()) for f in ("a.json", "b.json")]

    repo.init(commit="x")
    sh("dvc", "repro", "-q")
    first = keys()
    sh("dvc", "repro", "-q", "--force")
    second = keys()
    sh("dvc", "exp", "run", "-q", "-n", "e1", "-S", "n=2")
    exp = keys()
    for a, b in (first, second, exp):
        assert a == b, (a, b)
    assert first[0]["kind"] == second[0]["kind"] == "repro" and exp[0]["kind"] == "exp run"
    assert len({first[0]["key"], second[0]["key"], exp[0]["key"]}) == 3
    assert exp[0]["key"].startswith("e1:") and first[0]["key"].startswith("repro:")
