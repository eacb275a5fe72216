"""Run a named parameter sweep through DVC's experiment queue and record the results.

    python -m synthdrive.sweep NAME [-j N] [--file experiments/sweeps.yaml] [--dry-run]

Sweeps are defined in ``experiments/sweeps.yaml``: a ``grid`` of params.yaml keys to value
lists (every combination is one experiment), optional explicit ``runs`` (one override dict
each) and ``set`` (overrides shared by every run). Every key must exist in params.yaml. The
command creates the MLflow store and experiment once (parallel workers on a fresh sqlite store
corrupt it), queues one ``dvc exp run --queue -S ...`` per run, starts ``dvc queue start -j N``,
waits, and writes the ``dvc exp show --md`` table of the sweep into experiments/README.md.
Each queued experiment becomes one MLflow parent run named after it (synthdrive.tracking).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from synthdrive import params as params_mod
from synthdrive import tracking
from synthdrive.compute import JOBS_ENV
from synthdrive.errors import UserError, run_stage

SWEEPS = Path("experiments/sweeps.yaml")
RESULTS = Path("experiments/README.md")
DONE = {"Success", "Failed"}


class SweepError(UserError):
    """A bad sweep definition or a sweep that could not run."""


def load_sweep(name: str, file: Path = SWEEPS) -> dict:
    if not file.is_file():
        raise SweepError(f"{file}: not found; run from the repo root or pass --file")
    sweeps = (yaml.safe_load(file.read_text()) or {}).get("sweeps") or {}
    if name not in sweeps:
        raise SweepError(f"{file}: no sweep named {name!r}; defined: {', '.join(sorted(sweeps)) or 'none'}")
    return sweeps[name]


def expand(name: str, sweep: dict, file: Path = SWEEPS) -> list[dict]:
    """The override dict of every experiment of the sweep (grid combinations, then runs)."""
    shared = sweep.get("set") or {}
    grid = sweep.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{file}: sweeps.{name}.grid.{key} must be a non-empty list of values")
    runs = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []
    runs += [dict(r) for r in sweep.get("runs") or []]
    if not runs:
        raise SweepError(f"{file}: sweeps.{name} has neither grid nor runs; add one")
    return [{**shared, **r} for r in runs]


def validate(name: str, runs: list[dict], params: params_mod.Params, file: Path = SWEEPS) -> None:
    """Every swept key must already exist in params.yaml (``-S`` would silently add a typo)."""
    for key in sorted({k for r in runs for k in r}):
        try:
            value = params[key]
        except params_mod.ParamError:
            raise SweepError(f"{file}: sweep {name!r} sets {key!r}, which params.yaml does not have; "
                             f"fix the name (params.yaml sections: {', '.join(params.to_dict())})") from None
        if isinstance(value, params_mod.Params):
            raise SweepError(f"{file}: sweep {name!r} sets {key!r}, a whole section of params.yaml; "
                             f"sweep a single value inside it")


def hydra_value(value) -> str:
    """``value`` in Hydra's override grammar (how DVC parses ``-S``): JSON numbers, lists and
    double-quoted strings, but dict keys bare (``{match:"x*",split:test}``; quoted keys are refused)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    return json.dumps(value)


def set_args(overrides: dict) -> list[str]:
    """``-S key=value`` arguments; plain words pass as they are."""
    args = []
    for key, value in overrides.items():
        plain = isinstance(value, str) and re.fullmatch(r"[\w./-]+", value)
        args += ["-S", f"{key}={value if plain else hydra_value(value)}"]
    return args


def dvc(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("dvc")), *args]
    if not Path(cmd[0]).exists():
        cmd[0] = "dvc"
    proc = subprocess.run(cmd, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        raise SweepError(f"`dvc {' '.join(args)}` failed: {(proc.stderr or '').strip()[-800:]}")
    return proc


def warn_untracked() -> None:
    """Queued experiments see only files git tracks (staged is enough); say which are missing."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--",
                          "stages", "synthdrive", "dvc.yaml", "params.yaml"],
                         capture_output=True, text=True).stdout
    untracked = [line[3:] for line in out.splitlines() if line.startswith("??")]
    if untracked:
        print(f"sweep: warning: {len(untracked)} untracked files are invisible to queued "
              f"experiments (git add them): {', '.join(untracked[:5])}", file=sys.stderr)


def queue_status() -> dict[str, str]:
    """Experiment name -> Queued/Running/Success/Failed, from `dvc queue status`."""
    status = {}
    for line in dvc("queue", "status").stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[-1] in DONE | {"Queued", "Running"}:
            status[cols[1]] = cols[-1]
    return status


def wait(names: list[str], poll: float = 5.0) -> dict[str, str]:
    last = None
    while True:
        status = queue_status()
        mine = {n: status.get(n, "Running") for n in names}
        summary = ", ".join(f"{s}: {sum(v == s for v in mine.values())}"
                            for s in ("Queued", "Running", "Success", "Failed"))
        if summary != last:
            print(f"sweep: {summary}", flush=True)
            last = summary
        if all(s in DONE for s in mine.values()):
            return mine
        time.sleep(poll)


def _flat_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in data.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        keys += _flat_keys(v, name) if isinstance(v, dict) else [name]
    return keys


def results_table(names: list[str], swept: list[str], metrics: list[str] | None) -> str:
    """`dvc exp show --md` restricted to this sweep's rows, its params and the metrics."""
    if metrics is None:  # every metric the sweep's experiments wrote
        found = set()
        for baseline in json.loads(dvc("exp", "show", "--json", "--no-pager").stdout or "[]"):
            for exp in baseline.get("experiments") or []:
                for rev in exp.get("revs") or []:
                    if rev.get("name") in names:
                        for metric_file in ((rev.get("data") or {}).get("metrics") or {}).values():
                            found.update(_flat_keys(metric_file.get("data") or {}))
        metrics = sorted(found)
    keep = "|".join([r"^(Experiment|Created|State)$"] +
                    [rf"(^|:){re.escape(k)}$" for k in [*swept, *metrics]])
    table = dvc("exp", "show", "--md", "--no-pager", "--hide-workspace", "--hide-queued",
                "--drop", ".*", "--keep", keep).stdout.splitlines()
    rows = table[:2] + [line for line in table[2:]
                        if any(f"[{n}]" in line for n in names) or "──" not in line]
    return "\n".join(rows)


def write_results(name: str, sweep: dict, table: str, status: dict[str, str],
                  readme: Path = RESULTS) -> None:
    """Replace this sweep's block in experiments/README.md (other sweeps' blocks stay)."""
    begin, end = f"<!-- sweep:{name} -->", f"<!-- /sweep:{name} -->"
    failed = [n for n, s in status.items() if s != "Success"]
    block = "\n".join([
        begin, f"### {name}", "", (sweep.get("description") or "").strip(), "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} with `python -m synthdrive.sweep {name}`; "
        f"{len(status) - len(failed)}/{len(status)} experiments succeeded"
        + (f" (failed: {', '.join(failed)}; see `dvc queue logs NAME`)" if failed else "") + ".",
        "", table, end])
    text = readme.read_text() if readme.is_file() else "# Experiments\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    readme.write_text(text.rstrip() + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synthdrive.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a sweep defined in the sweeps file")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="experiments run in parallel")
    parser.add_argument("--file", type=Path, default=SWEEPS)
    parser.add_argument("--dry-run", action="store_true", help="validate and print the dvc commands")
    args = parser.parse_args(argv)

    sweep = load_sweep(args.name, args.file)
    runs = expand(args.name, sweep, args.file)
    validate(args.name, runs, params_mod.load(), args.file)
    stamp = time.strftime("%m%d-%H%M%S")
    names = [f"{args.name}-{stamp}-{i}" for i in range(len(runs))]
    commands = [["exp", "run", "--queue", "-n", n, *set_args(r)] for n, r in zip(names, runs)]
    if args.dry_run:
        print("\n".join("dvc " + " ".join(c) for c in commands))
        return
    warn_untracked()
    uri = tracking.init_store()
    # The queue workers inherit this environment. "." first on PYTHONPATH makes each queued
    # experiment import its own copy of synthdrive (the stage's cwd), not the editable install.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))
    os.environ[JOBS_ENV] = str(args.jobs)  # threads: auto shares the cores among the parallel jobs
    print(f"sweep {args.name}: {len(runs)} experiments, MLflow store {uri}")
    for command in commands:
        dvc(*command)
    dvc("queue", "start", "-j", str(args.jobs))
    status = wait(names)
    swept = sorted({k for r in runs for k in r})
    table = results_table(names, swept, sweep.get("metrics"))
    write_results(args.name, sweep, table, status)
    print(table)
    print(f"sweep {args.name}: results in {RESULTS}; compare the parent runs in MLflow "
          f"(mlflow ui --backend-store-uri {uri})")
    failed = [n for n, s in status.items() if s != "Success"]
    if failed:
        raise SweepError(f"{len(failed)} experiments failed ({', '.join(failed)}); "
                         f"see `dvc queue logs {failed[0]}`")


if __name__ == "__main__":
    run_stage(main)
