"""Run a named parameter sweep through DVC's experiment queue and record the results.

    python -m synthdrive.sweep NAME [-j N] [--file experiments/sweeps.yaml] [--dry-run]

Sweeps are defined in ``experiments/sweeps.yaml``: a ``grid`` of params.yaml keys to value
lists (every combination is one experiment), optional explicit ``runs`` (one override dict
each) and ``set`` (overrides shared by every run). Every key must exist in params.yaml. The
command creates the MLflow store and experiment once (parallel workers on a fresh sqlite store
corrupt it), queues the grid as one ``dvc exp run --queue -S key=a,b ...`` (DVC queues the
cartesian product itself, named ``NAME-STAMP-1``...) and each explicit run as one more
``dvc exp run --queue -S ... -S ...``, starts ``dvc queue start -j N``, waits on the experiments'
states from DVC's experiment API (``tracking.exp_rows``), and writes the
``dvc exp show --md`` table of the sweep into experiments/README.md. Each queued experiment
becomes one MLflow parent run named after it (synthdrive.tracking).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shlex
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


def queue_commands(name: str, sweep: dict, prefix: str, file: Path = SWEEPS) -> list[list[str]]:
    """The ``dvc exp run --queue`` arguments of the sweep: the grid as one command whose ``-S
    key=a,b`` values DVC expands into every combination (named ``PREFIX-1``...), then one command
    per explicit run (numbered on). A grid of one combination is queued as a plain run."""
    shared = sweep.get("set") or {}
    grid = sweep.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{file}: sweeps.{name}.grid.{key} must be a non-empty list of values")
    runs = [dict(r) for r in sweep.get("runs") or []]
    if not grid and not runs:
        raise SweepError(f"{file}: sweeps.{name} has neither grid nor runs; add one")
    commands = []
    if grid and all(len(values) == 1 for values in grid.values()):
        runs.insert(0, {key: values[0] for key, values in grid.items()})
    elif grid:
        fixed = {k: v for k, v in shared.items() if k not in grid}
        commands.append(["exp", "run", "--queue", "-n", prefix, *set_args(fixed),
                         *[arg for key, values in grid.items()
                           for arg in ("-S", f"{key}={','.join(hydra_value(v) for v in values)}")]])
    first = math.prod(len(values) for values in grid.values()) if commands else 0
    commands += [["exp", "run", "--queue", "-n", f"{prefix}-{first + i + 1}", *set_args({**shared, **run})]
                 for i, run in enumerate(runs)]
    return commands


def expand_commands(commands: list[list[str]]) -> list[dict]:
    """The override dict of every experiment the commands queue, as DVC expands them (the same
    functions ``dvc exp run --queue`` calls) and Hydra parses the values."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    runs = []
    for command in commands:
        sets = [command[i + 1] for i, arg in enumerate(command) if arg == "-S"]
        for combination in get_hydra_sweeps(to_path_overrides(sets)):
            overrides = [o for per_file in combination.values() for o in per_file]
            runs.append({o.key_or_group: o.value() for o in parser.parse_overrides(overrides)})
    return runs


def expand(name: str, sweep: dict, file: Path = SWEEPS) -> list[dict]:
    """The override dict of every experiment of the sweep (grid combinations, then runs), read
    back from the queue commands the way DVC expands them."""
    return expand_commands(queue_commands(name, sweep, name, file))


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


def _marked(value):
    """Strings as Hydra's QuotedString (so "32" stays a string); dict keys stay bare, as Hydra wants."""
    from hydra.core.override_parser.types import Quote, QuotedString

    if isinstance(value, str):
        return QuotedString(text=value, quote=Quote.double)
    if isinstance(value, list):
        return [_marked(item) for item in value]
    if isinstance(value, dict):
        return {key: _marked(item) for key, item in value.items()}
    return value


def hydra_value(value) -> str:
    """``value`` in Hydra's override grammar (how DVC parses ``-S``), written by Hydra's own
    serializer; a plain word stays bare when Hydra reads it back as the same string."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer
    from hydra.errors import HydraException

    if isinstance(value, str) and re.fullmatch(r"[\w./-]+", value):
        with contextlib.suppress(HydraException):  # not valid bare: quote it
            if OverridesParser.create().parse_override(f"k={value}").value() == value:
                return value
    return Transformer.str(_marked(value))


def outside_paths_absolute(overrides: dict) -> dict:
    """Path params (``params_schema.input_paths``) that name a folder outside the repo, made
    absolute: DVC looks for a dep inside a queued experiment's temp copy of the repo, where
    ``../shared/data/camvid`` does not exist (paths inside the repo are in the copy too)."""
    from synthdrive.params_schema import input_paths

    root = params_mod.repo_root().resolve()
    out = dict(overrides)
    for key in set(input_paths()) & set(out):
        if isinstance(out[key], str) and not Path(out[key]).is_absolute():
            resolved = (root / out[key]).resolve()
            if not resolved.is_relative_to(root):
                out[key] = str(resolved)
    return out


def set_args(overrides: dict) -> list[str]:
    """``-S key=value`` arguments (path params outside the repo made absolute)."""
    return [arg for key, value in outside_paths_absolute(overrides).items()
            for arg in ("-S", f"{key}={hydra_value(value)}")]


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


def warn_running_workers(root: Path) -> None:
    """`dvc queue start` keeps workers that already run, and they keep the environment of the
    command that started them (SYNTHDRIVE_JOBS, MLFLOW_TRACKING_URI): say so."""
    try:
        from dvc.repo import Repo

        with Repo.open(str(root)) as repo:
            running = len(repo.experiments.celery_queue.worker_status())
    except Exception:  # only a warning: never stop the sweep over it
        return
    if running:
        print(f"sweep: warning: {running} DVC queue workers already run with the environment of an "
              f"earlier `dvc queue start` (SYNTHDRIVE_JOBS, MLFLOW_TRACKING_URI); `dvc queue stop` "
              f"them first for this sweep's -j", file=sys.stderr)


def mine(rows: list[dict], names: list[str]) -> dict[str, dict]:
    return {r["name"]: r for r in rows if r["typ"] == "experiment" and r["name"] in names}


def wait(names: list[str], root: Path, baseline: str, poll: float = 5.0) -> dict[str, str]:
    """Experiment name -> Success / Failed once none of ``names`` is queued or running, from the
    experiments' states in DVC (``exp_rows``). A finished experiment whose queue entry is gone
    counts as Success; one that never appears (after the others ended) as Missing."""
    last, idle = None, 0
    while True:
        rows = mine(tracking.exp_rows(root, revs=baseline), names)
        status = {n: (rows[n]["state"] or "Success") if n in rows else "Missing" for n in names}
        summary = ", ".join(f"{s}: {sum(v == s for v in status.values())}"
                            for s in ("Queued", "Running", "Success", "Failed", "Missing"))
        if summary != last:
            print(f"sweep: {summary}", flush=True)
            last = summary
        if all(s in DONE for s in status.values()):
            return status
        idle = idle + 1 if all(s in DONE | {"Missing"} for s in status.values()) else 0
        if idle > 3:
            return status
        time.sleep(poll)


def results_table(names: list[str], swept: list[str], metrics: list[str] | None, root: Path,
                  baseline: str) -> str:
    """`dvc exp show --md` restricted to this sweep's rows, its params and the metrics."""
    if metrics is None:  # every metric the sweep's experiments wrote
        metrics = sorted({key.partition(":")[2] for row in mine(tracking.exp_rows(root, revs=baseline), names).values()
                          for key in row["metrics"]})
    keep = "|".join([r"^(Experiment|Created|State)$"] +
                    [rf"(^|:){re.escape(k)}$" for k in [*swept, *metrics]])
    table = dvc("exp", "show", "--md", "--no-pager", "--hide-workspace", "--hide-queued",
                "--drop", ".*", "--keep", keep, "--rev", baseline).stdout.splitlines()
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
    prefix = f"{args.name}-{time.strftime('%m%d-%H%M%S')}"
    commands = queue_commands(args.name, sweep, prefix, args.file)
    runs = expand_commands(commands)
    validate(args.name, runs, params_mod.load(), args.file)
    names = [f"{prefix}-{i + 1}" for i in range(len(runs))]
    if args.dry_run:
        print("\n".join(shlex.join(["dvc", *c]) for c in commands))
        print(f"sweep {args.name}: {len(runs)} experiments: {names[0]}"
              + (f" ... {names[-1]}" if len(names) > 1 else ""), file=sys.stderr)
        return
    warn_untracked()
    root = Path.cwd()
    baseline = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "HEAD"
    uri = tracking.init_store()
    # `dvc queue start` starts the workers, and they inherit this environment. "." first on
    # PYTHONPATH makes each queued experiment import its own copy of synthdrive (the stage's
    # cwd), not the editable install.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))
    os.environ[JOBS_ENV] = str(args.jobs)  # threads: auto shares the cores among the parallel jobs
    print(f"sweep {args.name}: {len(runs)} experiments, MLflow store {uri}")
    for command in commands:
        dvc(*command)
    warn_running_workers(root)
    dvc("queue", "start", "-j", str(args.jobs))
    status = wait(names, root, baseline)
    swept = sorted({k for r in runs for k in r})
    table = results_table(names, swept, sweep.get("metrics"), root, baseline)
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
