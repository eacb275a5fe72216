"""MLflow tracking: one parent run per pipeline execution, one child run per stage.

The store is sqlite at an absolute path under the repo root (``mlflow.db``; a relative path
inside a queued experiment would land in DVC's temp folder and be deleted), unless
MLFLOW_TRACKING_URI is set. Stages of one ``dvc repro`` / ``dvc exp run`` / queued experiment
find their shared parent through a key built from the DVC process running them (pid + start time),
which DVC records itself in ``.dvc/tmp/rwlock`` while a stage runs, or from SYNTHDRIVE_RUN_KEY.
Tracking must never kill a stage: every failure becomes a warning.

``exp_rows`` is the one reader of DVC's experiments table (``dvc exp show``) for the sweep runner
and the report.

Every run is tagged with the host, pid namespace, pid and start time of the process that made it;
each stage first closes as KILLED the runs left RUNNING by processes of this machine that no longer
exist (SIGKILL, a crash, the machine's OOM killer). Runs of live processes and of other machines
are never touched.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from synthdrive.errors import deferred_signals, process_gone, process_identity
from synthdrive.params import repo_root

EXPERIMENT = os.environ.get("SYNTHDRIVE_EXPERIMENT", "synthdrive")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow takes at most 100 params per log_batch call (MAX_PARAMS_TAGS_PER_BATCH).
PARAMS_PER_CALL = 100
PARAM_CHARS = 500


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _flat_files(files: dict | None, bare: str | None = None) -> dict[str, Any]:
    """{file: {"data": nested}} -> {"file:dotted.key": value}; keys of file ``bare`` unprefixed."""
    out = {}
    for file, body in (files or {}).items():
        prefix = "" if file == bare else f"{file}:"
        out.update({prefix + k: v for k, v in flatten((body or {}).get("data") or {}).items()})
    return out


def _row(name: str, state: dict, typ: str, executor: dict | None = None) -> dict:
    data = state.get("data") or {}
    error = state.get("error")
    stamp = data.get("timestamp")
    rev = state.get("rev") or ""
    return {"name": name, "typ": typ, "rev": "" if rev == "workspace" else rev[:7],
            "state": (executor or {}).get("state", "").capitalize() or None,
            "timestamp": stamp.isoformat() if hasattr(stamp, "isoformat") else stamp,
            "params": _flat_files(data.get("params"), bare="params.yaml"),
            "metrics": _flat_files(data.get("metrics")),
            "error": error.get("msg") if isinstance(error, dict) else error}


def exp_rows(root: Path, revs: str | list[str] | None = None) -> list[dict]:
    """``dvc exp show`` as flat rows, read through DVC's Python API (``Repo.experiments.show``,
    what ``dvc exp show`` and ``dvc.api.exp_show`` both call): the workspace, each baseline commit
    (``revs``, default HEAD) and its experiments, one row each (the latest revision of an
    experiment), with

    ``name`` (an experiment's name, a branch name, or ``workspace``), ``typ`` (``baseline`` or
    ``experiment``), ``rev`` (7 hex digits), ``state`` (Queued / Running / Success / Failed for
    queued experiments, else None), ``timestamp`` (ISO), ``params`` ({dotted key: value};
    ``file:key`` outside params.yaml), ``metrics`` ({``metrics/file.json:dotted.key``: value}) and
    ``error``.

    Not ``dvc.api.exp_show``: its rows turn every value into a float or a string (an int 6 comes
    back 6.0, a list as its Python repr) and name a column after its file only when two files share
    the key, so neither params from metrics nor a metric's file can be told apart there.
    Raises whatever DVC raises (not a DVC repo, no git, ...)."""
    from dvc.repo import Repo

    with Repo.open(str(root)) as repo:
        states = repo.experiments.show(revs=revs, fetch_running=False)
    rows = []
    for baseline in (s.dumpd() for s in states):
        workspace = baseline.get("rev") == "workspace"
        rows.append(_row("workspace" if workspace else baseline.get("name") or baseline.get("rev", "?"),
                         baseline, "baseline"))
        for exp in baseline.get("experiments") or []:
            for rev in (exp.get("revs") or [])[:1]:  # the latest revision of the experiment
                rows.append(_row(exp.get("name") or rev.get("name") or rev.get("rev"), rev,
                                 "experiment", exp.get("executor")))
    return rows


def _stage_repo() -> Path | None:
    """The DVC repo this stage runs in: the nearest folder above the cwd holding ``.dvc``. Under
    ``dvc repro`` / ``dvc exp run`` that is DVC_ROOT; in a queued experiment it is the temp copy
    under ``<DVC_ROOT>/.dvc/tmp/exps/``, while DVC_ROOT names the main repo."""
    here = Path.cwd().resolve()
    return next((d for d in (here, *here.parents) if (d / ".dvc").is_dir()), None)


def _rwlock_pids(repo: Path) -> list[int]:
    """The pids in DVC's ``<repo>/.dvc/tmp/rwlock``: while a stage's command runs, the DVC process
    running it holds read locks on the stage's deps and write locks on its outs there, under its
    own pid (dvc/rwlock.py, dvc/stage/decorators.py). Writes first; [] when unreadable."""
    path = repo / ".dvc" / "tmp" / "rwlock"
    for attempt in range(5):  # DVC rewrites the file in place: a read can catch it half-written
        try:
            lock = json.loads(path.read_text())
            break
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            time.sleep(0.05 * (attempt + 1))
    else:
        return []
    infos = [*(lock.get("write") or {}).values(), *(i for r in (lock.get("read") or {}).values() for i in r)]
    return list(dict.fromkeys(int(i["pid"]) for i in infos if isinstance(i, dict) and "pid" in i))


def _dvc_process(repo: Path | None):
    """The DVC process running this stage (a psutil.Process), from DVC's rwlock: the pid there
    that is an ancestor of this process (two ``dvc repro`` can run stages in one workspace at
    once), else the one pid there that is alive; None when DVC's record names neither."""
    import psutil

    roots = list(dict.fromkeys(r for r in (repo, os.environ.get("DVC_ROOT")) if r))
    pids = [pid for root in roots for pid in _rwlock_pids(Path(root))]
    ancestors = {p.pid: p for p in psutil.Process().parents()}
    mine = [ancestors[pid] for pid in pids if pid in ancestors]
    if mine:
        return mine[0]
    alive = [pid for pid in dict.fromkeys(pids) if psutil.pid_exists(pid)]
    if len(alive) == 1:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(alive[0])
    return None


def _pipeline_key() -> tuple[str, str]:
    """(key shared by the stages of one execution, kind of execution: repro / exp run / queued /
    manual). Under DVC (DVC_STAGE set) the key is the DVC process's pid and start time, found in
    DVC's own lock record (``_dvc_process``), plus DVC_EXP_NAME; SYNTHDRIVE_RUN_KEY overrides
    it. Outside DVC every run is its own "manual" execution, keyed by this process."""
    import psutil

    exp = os.environ.get("DVC_EXP_NAME", "")
    kind = "exp run" if exp else "repro"
    if os.environ.get("SYNTHDRIVE_RUN_KEY"):
        return os.environ["SYNTHDRIVE_RUN_KEY"], kind
    if os.environ.get("DVC_STAGE"):
        repo = _stage_repo()
        runner = _dvc_process(repo)
        if runner is not None:
            try:
                if repo is not None and ".dvc/tmp/exps" in repo.as_posix():
                    kind = "queued"  # a queue worker's (or --temp) copy of the repo
                return f"{exp or 'repro'}:{runner.pid}:{runner.create_time():.0f}", kind
            except psutil.Error:
                pass
        warnings.warn(f"stage {os.environ['DVC_STAGE']}: no running DVC process in "
                      f"{repo or 'the repo'}/.dvc/tmp/rwlock; its MLflow run gets a parent of its own")
    proc = psutil.Process()
    return f"{exp or 'manual'}:{proc.pid}:{proc.create_time():.0f}", "manual"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def log_params_batched(client, run_id: str, params: dict) -> int:
    """Log ``params`` (flattened, values cut to PARAM_CHARS) in log_batch calls of at most
    PARAMS_PER_CALL params: ~250 params are 3 calls, not 250. Returns the number of calls."""
    from mlflow.entities import Param

    entries = [Param(k, str(v)[:PARAM_CHARS]) for k, v in flatten(params).items()]
    calls = 0
    for i in range(0, len(entries), PARAMS_PER_CALL):
        client.log_batch(run_id, params=entries[i:i + PARAMS_PER_CALL])
        calls += 1
    return calls


def owner_tags() -> dict[str, str]:
    """Tags naming the process that makes a run, so a later stage can tell that it died."""
    me = process_identity()
    return {"synthdrive_host": me["host"], "synthdrive_pidns": me["pidns"],
            "synthdrive_pid": me["pid"], "synthdrive_pid_start": me["start"]}


def close_dead_runs(client, experiment_id: str) -> list[str]:
    """Close as KILLED every RUNNING run of ``experiment_id`` whose process (per its owner tags)
    ran on this machine and no longer exists; return their ids. Untagged runs, runs of live
    processes and runs made on another host or in another pid namespace stay as they are."""
    me = process_identity()
    runs = client.search_runs([experiment_id], max_results=1000, filter_string=(
        f"attributes.status = 'RUNNING' and tags.synthdrive_host = '{me['host']}'"))
    closed = []
    for run in runs:
        tags = run.data.tags
        if tags.get("synthdrive_pidns", "") != me["pidns"]:
            continue
        try:
            pid, start = int(tags["synthdrive_pid"]), float(tags["synthdrive_pid_start"])
        except (KeyError, ValueError):
            continue
        if process_gone(pid, start):
            client.set_tag(run.info.run_id, "synthdrive_closed_by",
                           f"pid {me['pid']}: its process (pid {pid}) had ended without closing it")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


class StageRun:
    """What a stage logs to; every method is a no-op (with one warning) when tracking failed."""

    def __init__(self, mlflow_module=None, run_id: str | None = None, parent_id: str | None = None):
        self._mlflow, self.run_id, self.parent_id = mlflow_module, run_id, parent_id
        self._owner = mlflow_module  # still closes the run after logging was given up

    def _call(self, fn: str, *args, **kwargs) -> None:
        if self._mlflow is None:
            return
        self._guard(fn, lambda: getattr(self._mlflow, fn)(*args, **kwargs))

    def _guard(self, what: str, call) -> None:
        try:
            call()
        except Exception as e:  # tracking must not kill a stage
            warnings.warn(f"MLflow {what} failed, continuing without tracking: {e}")
            self._mlflow = None

    def log_params(self, params: dict) -> None:
        if self._mlflow is None:
            return
        client = self._mlflow.MlflowClient
        self._guard("log_params", lambda: log_params_batched(client(), self.run_id, params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        flat = {k: float(v) for k, v in flatten(metrics).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._call("log_metrics", flat, step=step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._call("log_artifact", str(path), artifact_path)

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        """Headline numbers on the parent run, so executions compare side by side in the UI."""
        if self._mlflow is None or self.parent_id is None:
            return
        try:
            client = self._mlflow.MlflowClient()
            for k, v in flatten(metrics).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    client.log_metric(self.parent_id, k, float(v))
        except Exception as e:
            warnings.warn(f"MLflow parent metrics failed: {e}")

    def _close(self, status: str) -> None:
        """End the run (also when logging to it was given up: it must not stay RUNNING)."""
        mlflow, self._owner = self._owner, None
        if mlflow is None or self.run_id is None:
            return
        try:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status=status)
            else:
                mlflow.MlflowClient().set_terminated(self.run_id, status=status)
        except Exception as e:
            if self._mlflow is not None:  # else its failure was already reported
                warnings.warn(f"MLflow end_run failed: {e}")


def init_store(root: Path | None = None) -> str:
    """Create the store (schema) and the experiment; return the tracking URI. Call it once
    before parallel queue workers start: two workers creating a fresh sqlite store corrupt it."""
    import mlflow

    root = root or repo_root()
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri())
    return uri


_CACHE: dict[tuple[Any, str], tuple[tuple[int, int], Any]] = {}


def _cached(kind, path: Path, load) -> Any:
    """``load(path)``, once per process while the file's mtime and size stay the same."""
    path = path.resolve()
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get((kind, str(path)))
    if hit is None or hit[0] != stamp:
        hit = _CACHE[(kind, str(path))] = (stamp, load(path))
    return hit[1]


def loaded_params():
    """params.yaml of the working directory (``params.load()``), parsed and checked once per
    process: every stage_run of a process reads it for its declared params and the parent run."""
    from synthdrive import params as params_mod

    load = params_mod.load  # looked up per call: a stand-in (tests) is used, not an older parse
    path = Path.cwd() / "params.yaml"
    if not path.is_file():
        return load()  # its error names the missing file
    return _cached(("params", load), path, lambda p: load(file=p))  # the cache keeps ``load`` alive


def declared_params(stage: str, dvc_file: str | os.PathLike = "dvc.yaml") -> dict[str, Any]:
    """{key: value} from params.yaml for each key of the ``params:`` list dvc.yaml gives stage
    ``stage`` (``name@item`` -> ``name``): one list decides both what reruns the stage and what
    its run logs. Empty outside a DVC project or for a stage dvc.yaml does not name. Both files
    are parsed once per process (``_cached``)."""
    import yaml

    from synthdrive import params as params_mod

    path = Path(dvc_file)
    if not path.is_file():
        return {}
    stages = _cached("dvc.yaml", path, lambda p: yaml.safe_load(p.read_text()) or {}).get("stages", {})
    body = stages.get(stage.split("@")[0]) or {}
    keys = [key for key in body.get("params", []) if isinstance(key, str)]
    if not keys:
        return {}
    p = loaded_params()
    out = {}
    for key in keys:
        value = p[key]
        out[key] = copy.deepcopy(value.to_dict() if isinstance(value, params_mod.Params) else value)
    return out


def _start(tracker: StageRun, stage: str, section_params: dict) -> None:
    """Open the child run of ``stage`` (and the parent, first stage of an execution) into
    ``tracker``. Runs are made inside deferred_signals: a SIGTERM or Ctrl-C meanwhile waits until
    the parent is closed and the child is in ``tracker``, which stage_run then closes."""
    import mlflow

    init_store()
    experiment_id = mlflow.set_experiment(EXPERIMENT).experiment_id
    client = mlflow.MlflowClient()
    try:
        close_dead_runs(client, experiment_id)
    except Exception as e:
        warnings.warn(f"could not close the MLflow runs of killed processes: {e}")
    key, kind = _pipeline_key()
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    found = mlflow.search_runs(filter_string=f"tags.synthdrive_key = '{key}' and tags.role = 'pipeline'",
                               output_format="list", max_results=1)
    tags = {"git_commit": _git("rev-parse", "HEAD"), "dvc_exp_name": exp_name, "kind": kind,
            "git_dirty": str(bool(_git("status", "--porcelain"))).lower(), **owner_tags()}
    if found:
        parent_id = found[0].info.run_id
    else:
        try:
            all_params = loaded_params().to_dict()
        except Exception as e:
            all_params = {}
            warnings.warn(f"could not log params.yaml on the parent run: {e}")
        with deferred_signals():
            parent_id = client.create_run(
                experiment_id, run_name=exp_name or f"{kind} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                tags={**tags, "synthdrive_key": key, "role": "pipeline"}).info.run_id
            try:
                log_params_batched(client, parent_id, all_params)
            except Exception as e:
                warnings.warn(f"could not log params.yaml on the parent run: {e}")
            finally:
                client.set_terminated(parent_id)
    with deferred_signals():
        run = mlflow.start_run(run_name=stage, parent_run_id=parent_id,
                               tags={**tags, "stage": stage, "role": "stage"})
        tracker._mlflow = tracker._owner = mlflow
        tracker.run_id, tracker.parent_id = run.info.run_id, parent_id
    tracker.log_params(section_params)


@contextlib.contextmanager
def stage_run(stage: str, extra_params: dict | None = None) -> Iterator[StageRun]:
    """Open the MLflow child run of ``stage`` under this execution's parent run; close it as
    FINISHED, FAILED (an exception, SIGTERM under run_stage) or KILLED (Ctrl-C).

    The run logs the params dvc.yaml declares for the stage (``declared_params``) plus
    ``extra_params`` (command-line arguments such as a variant and seed)."""
    tracker = StageRun()
    status = "FAILED"
    try:
        try:
            _start(tracker, stage, {**declared_params(stage), **(extra_params or {})})
        except Exception as e:
            warnings.warn(f"MLflow tracking unavailable ({e}); stage {stage} runs untracked")
            tracker._mlflow = None
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        with deferred_signals():
            tracker._close(status)
