"""MLflow tracking: one parent run per pipeline execution, one child run per stage.

The store is sqlite at an absolute path under the repo root (``mlflow.db``; a relative path
inside a queued experiment would land in DVC's temp folder and be deleted), unless
MLFLOW_TRACKING_URI is set. Stages of one ``dvc repro`` / ``dvc exp run`` find their shared
parent through a key built from the nearest ``dvc`` ancestor process (pid + start time), or
from SYNTHDRIVE_RUN_KEY. Tracking must never kill a stage: every failure becomes a warning.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from synthdrive.params import repo_root

EXPERIMENT = os.environ.get("SYNTHDRIVE_EXPERIMENT", "synthdrive")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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


def _pipeline_key() -> tuple[str, str]:
    """(key shared by the stages of one execution, kind of execution)."""
    exp = os.environ.get("DVC_EXP_NAME", "")
    kind = "exp run" if exp else "repro"
    if os.environ.get("SYNTHDRIVE_RUN_KEY"):
        return os.environ["SYNTHDRIVE_RUN_KEY"], kind
    import psutil

    proc = psutil.Process()
    for parent in proc.parents():
        try:
            cmd = " ".join(parent.cmdline()[:3])
            if "dvc" in Path(parent.cmdline()[0]).name or " -m dvc" in cmd or "/dvc " in cmd + " ":
                if "queue" in cmd or ".dvc/tmp/exps" in os.getcwd():
                    kind = "queued"
                return f"{exp or 'repro'}:{parent.pid}:{parent.create_time():.0f}", kind
        except (psutil.Error, IndexError):
            continue
    return f"{exp or 'manual'}:{proc.pid}:{proc.create_time():.0f}", "manual"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class StageRun:
    """What a stage logs to; every method is a no-op (with one warning) when tracking failed."""

    def __init__(self, mlflow_module=None, run_id: str | None = None, parent_id: str | None = None):
        self._mlflow, self.run_id, self.parent_id = mlflow_module, run_id, parent_id

    def _call(self, fn: str, *args, **kwargs) -> None:
        if self._mlflow is None:
            return
        try:
            getattr(self._mlflow, fn)(*args, **kwargs)
        except Exception as e:  # tracking must not kill a stage
            warnings.warn(f"MLflow {fn} failed, continuing without tracking: {e}")
            self._mlflow = None

    def log_params(self, params: dict) -> None:
        flat = {k: str(v)[:500] for k, v in flatten(params).items()}
        self._call("log_params", flat)

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


def _start(stage: str, section_params: dict):
    import mlflow

    init_store()
    mlflow.set_experiment(EXPERIMENT)
    key, kind = _pipeline_key()
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    found = mlflow.search_runs(filter_string=f"tags.synthdrive_key = '{key}' and tags.role = 'pipeline'",
                               output_format="list", max_results=1)
    tags = {"git_commit": _git("rev-parse", "HEAD"), "dvc_exp_name": exp_name, "kind": kind,
            "git_dirty": str(bool(_git("status", "--porcelain"))).lower()}
    if found:
        parent_id = found[0].info.run_id
    else:
        from synthdrive import params as params_mod

        parent = mlflow.MlflowClient().create_run(
            mlflow.get_experiment_by_name(EXPERIMENT).experiment_id,
            run_name=exp_name or f"{kind} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={**tags, "synthdrive_key": key, "role": "pipeline"})
        parent_id = parent.info.run_id
        try:
            all_params = flatten(params_mod.load().to_dict())
            client = mlflow.MlflowClient()
            for k, v in all_params.items():
                client.log_param(parent_id, k, str(v)[:500])
        except Exception as e:
            warnings.warn(f"could not log params.yaml on the parent run: {e}")
        mlflow.MlflowClient().set_terminated(parent_id)
    run = mlflow.start_run(run_name=stage, parent_run_id=parent_id,
                           tags={**tags, "stage": stage, "role": "stage"})
    tracker = StageRun(mlflow, run.info.run_id, parent_id)
    tracker.log_params(section_params)
    return tracker


@contextlib.contextmanager
def stage_run(stage: str, section_params: dict | None = None) -> Iterator[StageRun]:
    """Open the MLflow child run of ``stage`` under this execution's parent run."""
    try:
        tracker = _start(stage, section_params or {})
    except Exception as e:
        warnings.warn(f"MLflow tracking unavailable ({e}); stage {stage} runs untracked")
        tracker = StageRun()
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if tracker._mlflow is not None:
            try:
                tracker._mlflow.end_run(status=status)
            except Exception as e:
                warnings.warn(f"MLflow end_run failed: {e}")
