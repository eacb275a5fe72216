"""Where a result came from: git commit, DVC experiment, earlier experiments, stage timings.

Each function degrades to an explanation (not a crash) outside a git repo, with no experiments
or with no MLflow store: the report must still render from the files on disk.
"""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthdrive.tracking import EXPERIMENT, exp_rows, tracking_uri


def _run(cmd: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class Revision:
    commit: str | None  # None outside a git repo or before the first commit
    dirty: bool
    experiment: str  # the DVC experiment being run, or how the pipeline ran
    baseline: str | None
    note: str = ""


def revision(root: Path) -> Revision:
    """The git commit and DVC experiment this report belongs to."""
    exp = os.environ.get("DVC_EXP_NAME")
    experiment = f"dvc exp run -n {exp}" if exp else "workspace (dvc repro or a stage run by hand)"
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    head = _run(["git", "rev-parse", "HEAD"], root, timeout=10)
    if head is None or head.returncode != 0:
        inside = _run(["git", "rev-parse", "--git-dir"], root, timeout=10)
        note = ("no commit yet" if inside is not None and inside.returncode == 0
                else "not a git repository")
        return Revision(None, False, experiment, baseline, note)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], root, timeout=10)
    dirty = bool(status and status.stdout.strip())
    return Revision(head.stdout.strip(), dirty, experiment, baseline)


@dataclass
class Experiments:
    rows: list[dict] = field(default_factory=list)  # {name, rev, timestamp, params, metrics}
    param_columns: list[str] = field(default_factory=list)
    metric_columns: list[str] = field(default_factory=list)
    note: str = ""


def _short(value: Any, limit: int = 40) -> str:
    """A param value as a table cell: lists as JSON, long values cut."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def exp_table(rows: list[dict], max_metric_columns: int, headline: list[str]) -> Experiments:
    """The report's experiments table from ``exp_rows``. Param columns: those whose value differs
    between rows. Metric columns (``file.json:key``, numbers only): the ``headline`` patterns
    (fnmatch) first, then the other metrics that differ, at most ``max_metric_columns``."""
    table = []
    for row in rows:
        metrics = {}
        for key, value in row["metrics"].items():
            file, _, name = key.partition(":")
            if _number(value):
                metrics[f"{Path(file).name}:{name}"] = value
        table.append({**row, "params": {k: _short(v) for k, v in row["params"].items()},
                      "metrics": metrics})
    if not any(r["typ"] == "experiment" for r in rows):
        note = "no DVC experiments yet: run `dvc exp run -S section.key=value` to add rows"
    else:
        note = ""

    def differing(kind: str) -> list[str]:
        keys = sorted({k for r in table for k in r[kind]})
        return [k for k in keys if len({json.dumps(r[kind].get(k), sort_keys=True) for r in table}) > 1]

    present = sorted({k for r in table for k in r["metrics"]})
    metric_columns = [k for pattern in headline for k in present if fnmatch.fnmatchcase(k, pattern)]
    metric_columns += [k for k in differing("metrics") if k not in metric_columns]
    return Experiments(table, differing("params"), list(dict.fromkeys(metric_columns))[:max_metric_columns], note)


def experiments(root: Path, max_metric_columns: int, headline: list[str]) -> Experiments:
    """The table behind ``dvc exp show``: the workspace, the baseline commit and its experiments."""
    try:
        rows = exp_rows(root)
    except Exception as e:  # not a git/DVC repo, or DVC failed: the report still renders
        reason = " ".join(str(e).split()) or type(e).__name__
        return Experiments(note=f"`dvc exp show` gave no table here ({reason})")
    return exp_table(rows, max_metric_columns, headline)


@dataclass
class StageTiming:
    stage: str
    seconds: float
    started: str
    status: str
    this_execution: bool  # ran under the same MLflow parent run as this report


@dataclass
class Timings:
    stages: list[StageTiming] = field(default_factory=list)
    parent: str | None = None
    note: str = ""
    store: str = ""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def timings(parent_id: str | None, exclude: str = "report") -> Timings:
    """Wall time of each stage's latest finished MLflow child run (in the store of
    ``tracking.tracking_uri()``: under DVC_ROOT, also for queued experiments).

    DVC records no durations (dvc.lock holds hashes only); MLflow's child runs hold start and
    end times. Stages that ``dvc repro`` skipped (nothing changed) keep their last real run,
    so every stage shows a time, marked when it came from an earlier execution.
    """
    try:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking_uri())
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            return Timings(note=f"no MLflow experiment {EXPERIMENT!r} in {tracking_uri()}")
        runs = client.search_runs([exp.experiment_id], "tags.role = 'stage'",
                                  order_by=["attributes.start_time DESC"], max_results=2000)
    except Exception as e:  # an absent or unreadable store must not stop the report
        return Timings(note=f"MLflow store unreadable ({type(e).__name__}: {e})")
    latest: dict[str, Any] = {}
    for run in runs:
        stage = run.data.tags.get("stage") or run.info.run_name
        if stage == exclude or stage in latest or run.info.status != "FINISHED" or not run.info.end_time:
            continue
        latest[stage] = run
    stages = [StageTiming(stage, (r.info.end_time - r.info.start_time) / 1000, _iso(r.info.start_time),
                          r.info.status, r.data.tags.get("mlflow.parentRunId") == parent_id)
              for stage, r in latest.items()]
    stages.sort(key=lambda t: t.started)
    note = "" if stages else "no finished stage runs in the MLflow store yet"
    return Timings(stages, parent_id, note, tracking_uri())
