"""What a killed stage leaves behind is cleaned up by the next one: temp output folders of dead
writers, MLflow runs left RUNNING by dead processes; Ctrl-C is one line; outputs get normal
permissions; params are logged in a bounded number of calls."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import mlflow
import pytest

from synthdrive import errors, tracking
from synthdrive import params as params_mod
from synthdrive.dataset import DatasetWriter, atomic_dir

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process checks use Linux /proc")

READY_TIMEOUT_S = 120


def _start(tmp_path: Path, name: str, body: str, fake_params: bool = False) -> tuple[subprocess.Popen, str]:
    """Run a script in tmp_path; return the process and the first line it prints (once ready).
    ``fake_params``: its parent run sees PARAMS as params.yaml."""
    script = tmp_path / f"{name}.py"
    script.write_text((textwrap.dedent(PARAMS) if fake_params else "") + textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(READY_TIMEOUT_S, proc.kill)  # a script stuck before its line: fail
    timer.start()
    try:
        line = proc.stdout.readline().strip()
    finally:
        timer.cancel()
    if not line:
        proc.kill()
        raise AssertionError(f"{name} did not start:\n{proc.stderr.read()[-3000:]}")
    return proc, line


def _sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _temps(folder: Path, name: str = "out") -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def _params_are(monkeypatch, data: dict) -> None:
    """params.yaml as the parent run sees it (known params, whatever the repo's file holds)."""
    monkeypatch.setattr(params_mod, "load", lambda *args, **kwargs: params_mod.Params(data))


# The same for the stage scripts run as subprocesses (they write warnings on stderr otherwise).
PARAMS = """
    from synthdrive import params as _params
    _params.load = lambda *args, **kwargs: _params.Params({"a": {"b": 1}})
"""


@pytest.fixture
def small_params(monkeypatch):
    _params_are(monkeypatch, {"a": {"b": 1}})


# --- temp output folders --------------------------------------------------------------------

WRITER = """
    import time
    from synthdrive.dataset import atomic_dir

    with atomic_dir("out") as tmp:
        (tmp / "part.txt").write_text("half")
        print("ready", flush=True)
        time.sleep(120)
"""


def test_next_write_removes_the_temp_folder_of_a_killed_writer(tmp_path):
    proc, _ = _start(tmp_path, "writer", WRITER)
    _sigkill(proc)
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(".out.tmp-")  # what SIGKILL leaves
    with atomic_dir(tmp_path / "out") as d:
        (d / "new.txt").write_text("whole")
    assert _temps(tmp_path) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]


def test_temp_folders_of_live_writers_and_other_machines_stay(tmp_path):
    proc, _ = _start(tmp_path, "writer", WRITER)
    try:
        live = _temps(tmp_path)
        assert len(live) == 1
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        # a dead pid, but on another machine (a folder shared over the network): not ours to judge
        elsewhere = tmp_path / f".out.tmp-{dead.pid}-{round(time.time() * 100)}-00000000-abcd1234"
        elsewhere.mkdir()
        with atomic_dir(tmp_path / "out") as d:
            (d / "x").write_text("x")
        assert _temps(tmp_path) == sorted([*live, elsewhere.name])
    finally:
        _sigkill(proc)


def test_old_style_temp_folders_go_once_untouched_for_an_hour(tmp_path):
    stale, fresh = tmp_path / ".out.tmp-ab_cd123", tmp_path / ".out.tmp-zz_yy987"
    for folder in (stale, fresh):
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "a.png").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for path in (stale / "images" / "a.png", stale / "images", stale):
        os.utime(path, (two_hours_ago, two_hours_ago))
    (tmp_path / ".other.tmp-ab_cd123").mkdir()  # another output's: not this write's business
    os.utime(tmp_path / ".other.tmp-ab_cd123", (two_hours_ago, two_hours_ago))
    with atomic_dir(tmp_path / "out"):
        pass
    assert _temps(tmp_path) == [fresh.name]
    assert (tmp_path / ".other.tmp-ab_cd123").is_dir()


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as d:
            (d / "f.txt").write_text("x")
        with DatasetWriter(tmp_path / "ds", "camvid11"):
            pass
        os.umask(0o077)
        with atomic_dir(tmp_path / "private"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


# --- MLflow runs ----------------------------------------------------------------------------

def _run(uri: str, run_id: str):
    return mlflow.MlflowClient(uri).get_run(run_id)


def test_a_run_left_running_by_a_killed_stage_is_closed_as_killed(tmp_path, tracking_store, small_params):
    proc, run_id = _start(tmp_path, "doomed", """
        import time
        from synthdrive import tracking

        with tracking.stage_run("doomed") as run:
            print(run.run_id, flush=True)
            time.sleep(120)
    """, fake_params=True)
    _sigkill(proc)
    assert _run(tracking_store, run_id).info.status == "RUNNING"  # what SIGKILL leaves
    with tracking.stage_run("next") as nxt:
        pass
    killed = _run(tracking_store, run_id)
    assert killed.info.status == "KILLED" and killed.info.end_time
    assert f"pid {proc.pid}" in killed.data.tags["synthdrive_closed_by"]
    assert _run(tracking_store, nxt.run_id).info.status == "FINISHED"


def test_runs_of_live_processes_other_machines_and_untagged_runs_are_left_alone(
        tmp_path, tracking_store, small_params):
    proc, live_id = _start(tmp_path, "alive", """
        import time
        from synthdrive import tracking
        from synthdrive.errors import run_stage

        def main():
            with tracking.stage_run("alive") as run:
                print(run.run_id, flush=True)
                time.sleep(120)

        run_stage(main)
    """, fake_params=True)
    try:
        client = mlflow.MlflowClient(tracking_store)
        experiment_id = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        me = tracking.owner_tags()
        fake = {  # name: owner tags
            "other_host": {**me, "synthdrive_host": "another-host", "synthdrive_pid": str(dead.pid)},
            "other_pidns": {**me, "synthdrive_pidns": "1", "synthdrive_pid": str(dead.pid)},
            "untagged": {},
            # this test's own pid, but "started" an hour earlier: a reused pid, so its owner is gone
            "reused_pid": {**me, "synthdrive_pid_start": f"{float(me['synthdrive_pid_start']) - 3600:.2f}"},
        }
        ids = {name: client.create_run(experiment_id, tags=tags).info.run_id for name, tags in fake.items()}
        with tracking.stage_run("other"):
            pass
        status = {name: client.get_run(i).info.status for name, i in ids.items()}
        assert status == {"other_host": "RUNNING", "other_pidns": "RUNNING", "untagged": "RUNNING",
                          "reused_pid": "KILLED"}
        assert client.get_run(live_id).info.status == "RUNNING"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _run(tracking_store, live_id).info.status == "FAILED"


def test_params_are_logged_in_a_bounded_number_of_calls(tmp_path, tracking_store, monkeypatch):
    _params_are(monkeypatch, {"s": {f"k{i:03d}": i for i in range(250)}})
    monkeypatch.setenv("SYNTHDRIVE_RUN_KEY", "bounded:1:1")
    calls = {"log_param": 0, "log_batch": 0}
    for name in calls:
        original = getattr(mlflow.MlflowClient, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(mlflow.MlflowClient, name, counting)
    with tracking.stage_run("a", {"sec": {f"p{i:03d}": i for i in range(150)}}) as run:
        pass
    # parent: 250 params in 3 calls of <= 100; child: 150 in 2 (was one call per parent param)
    assert calls == {"log_param": 0, "log_batch": 5}
    client = mlflow.MlflowClient(tracking_store)
    parent = client.get_run(run.parent_id)
    assert len(parent.data.params) == 250 and parent.data.params["s.k249"] == "249"
    assert parent.info.status == "FINISHED"
    assert len(client.get_run(run.run_id).data.params) == 150


@pytest.mark.parametrize("during, left", [
    # the parent's params: SIGTERM waits until the parent is complete and closed, then stops
    # the stage before its child run is made
    ("parent", [("pipeline", "FINISHED", {"a.b": "1"})]),
    # the child's params: the stage stops there (before they are logged) and its child run is
    # closed as FAILED
    ("child", [("pipeline", "FINISHED", {"a.b": "1"}), ("stage", "FAILED", {})]),
])
def test_sigterm_while_runs_are_being_made_leaves_no_run_running(tmp_path, tracking_store, small_params,
                                                                  monkeypatch, during, left):
    fire_on = {"parent": 1, "child": 2}[during]  # params call number
    calls, fired = [], []
    for name in ("log_param", "log_batch"):
        original = getattr(mlflow.MlflowClient, name)

        def sigterm_first(self, *args, _original=original, **kwargs):
            calls.append(1)
            if len(calls) == fire_on and not fired:
                fired.append(True)
                os.kill(os.getpid(), signal.SIGTERM)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(mlflow.MlflowClient, name, sigterm_first)
    previous = signal.signal(signal.SIGTERM, errors._exit_on_sigterm)
    try:
        with pytest.raises(SystemExit) as stopped:
            with tracking.stage_run("a", {"p": 1}):
                raise AssertionError("the stage body must not run after SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert fired and stopped.value.code == 128 + signal.SIGTERM
    runs = mlflow.MlflowClient(tracking_store).search_runs(
        [mlflow.MlflowClient(tracking_store).get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    assert sorted((r.data.tags["role"], r.info.status, r.data.params) for r in runs) == left


def test_ctrl_c_prints_one_line_cleans_up_and_exits_130(tmp_path, tracking_store, small_params):
    tracking.init_store(tmp_path)  # a fresh store logs its migrations on stderr; not this test's
    proc, run_id = _start(tmp_path, "stage", """
        import signal
        import time
        from synthdrive import tracking
        from synthdrive.dataset import atomic_dir
        from synthdrive.errors import run_stage

        # as in a terminal, also where the tests run with SIGINT ignored (a background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def main():
            with tracking.stage_run("ctrl_c") as run, atomic_dir("out") as tmp:
                (tmp / "part.txt").write_text("half")
                print(run.run_id, flush=True)
                time.sleep(120)

        run_stage(main)
    """, fake_params=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    assert stderr == "interrupted\n", stderr
    assert _temps(tmp_path) == [] and not (tmp_path / "out").exists()
    assert _run(tracking_store, run_id).info.status == "KILLED"
