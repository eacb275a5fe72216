"""Sweeps: definitions validated against params.yaml, and a real two-experiment sweep through the
DVC queue (-j 2) whose MLflow parent runs carry their own params and headline metric."""
from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from synthdrive import params as params_mod
from synthdrive import sweep
from tests.helpers import REPO, mlflow_server, rest, tiny_headline_repo

PARAMS = params_mod.Params({"collect": {"width": 256, "height": 128, "folder": {"path": "x"}},
                            "labels": {"space": "camvid11"}})


def test_grid_runs_and_shared_overrides_expand():
    """The grid is one `dvc exp run --queue` whose -S key=a,b values DVC expands; each explicit
    run is one more command. `expand` reads the experiments back the way DVC expands them."""
    definition = {"grid": {"collect.width": [32, 48], "collect.height": [8, 16]},
                  "set": {"labels.space": "camvid11"}, "runs": [{"collect.width": 64}]}
    commands = sweep.queue_commands("s", definition, "s-1")
    assert commands == [
        ["exp", "run", "--queue", "-n", "s-1", "-S", "labels.space=camvid11",
         "-S", "collect.width=32,48", "-S", "collect.height=8,16"],
        ["exp", "run", "--queue", "-n", "s-1-5", "-S", "labels.space=camvid11", "-S", "collect.width=64"]]
    runs = sweep.expand("s", definition)
    assert len(runs) == 5 and runs[0] == {"labels.space": "camvid11", "collect.width": 32,
                                          "collect.height": 8}
    assert runs[1] == {"labels.space": "camvid11", "collect.width": 32, "collect.height": 16}
    assert runs[-1] == {"labels.space": "camvid11", "collect.width": 64}
    assert sweep.set_args({"a.b": 0.25, "c": "x", "d": [1, 2], "e": "a prompt: wet"}) == \
        ["-S", "a.b=0.25", "-S", "c=x", "-S", "d=[1,2]", "-S", 'e="a prompt: wet"']
    # a grid of one combination is a plain run; list values sweep as lists
    assert sweep.queue_commands("t", {"grid": {"a": [1], "b": ["x"]}}, "t-1") == \
        [["exp", "run", "--queue", "-n", "t-1-1", "-S", "a=1", "-S", "b=x"]]
    assert sweep.expand("u", {"grid": {"segmenter.seeds": [[0], [1, 2]]}}) == \
        [{"segmenter.seeds": [0]}, {"segmenter.seeds": [1, 2]}]


def test_set_args_values_round_trip_through_hydra():
    """DVC parses -S values with Hydra's grammar: lists of dicts with glob strings, strings that
    look like numbers, quotes, backslashes and non-ASCII text must survive."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = [{"match": "train/0001TP_008*", "split": "test"}, {"match": "val/a b", "split": "val"}]
    overrides = {"collect.folder.resplit": value, "segmenter.seeds": [0, 1, 2], "x": 0.5, "p": "a: b",
                 "n": "32", "t": "true", "q": 'say "hi" \\ there', "u": "dämmerung", "f": 1e-05, "b": False}
    args = sweep.set_args(overrides)
    parsed = OverridesParser.create().parse_overrides(args[1::2])
    assert {o.key_or_group: o.value() for o in parsed} == overrides
    grid = {"collect.folder.resplit": [value, []], "n": ["32", "a,b"]}
    assert sweep.expand("g", {"grid": grid}) == [
        {"collect.folder.resplit": r, "n": n} for r in (value, []) for n in ("32", "a,b")]


def test_path_params_outside_the_repo_are_queued_absolute():
    """A queued experiment runs in a temp copy of the repo, where DVC would not find the dep
    ``../shared/data/camvid``: such paths are made absolute; paths inside the repo stay."""
    args = sweep.set_args({"collect.folder.path": "../shared/data/camvid", "classify.clip.model_dir": "unset",
                           "collect.width": 32})
    assert args == ["-S", f"collect.folder.path={(REPO / '../shared/data/camvid').resolve()}",
                    "-S", "classify.clip.model_dir=unset", "-S", "collect.width=32"]


@pytest.mark.parametrize("key,message", [("collect.widht", "does not have"),
                                         ("collect.folder", "a whole section")])
def test_unknown_or_section_params_are_refused(key, message):
    with pytest.raises(sweep.SweepError, match=message) as err:
        sweep.validate("s", [{key: 1}], PARAMS)
    assert "'s'" in str(err.value) and key in str(err.value)


def test_bad_definitions_name_the_problem(tmp_path):
    file = tmp_path / "sweeps.yaml"
    file.write_text("sweeps:\n  a: {grid: {collect.width: 3}}\n  b: {}\n")
    with pytest.raises(sweep.SweepError, match="no sweep named 'zz'; defined: a, b"):
        sweep.load_sweep("zz", file)
    with pytest.raises(sweep.SweepError, match="grid.collect.width must be a non-empty list"):
        sweep.expand("a", sweep.load_sweep("a", file), file)
    with pytest.raises(sweep.SweepError, match="neither grid nor runs"):
        sweep.expand("b", sweep.load_sweep("b", file), file)


def test_repo_sweeps_name_real_params(repo):
    """Every sweep in experiments/sweeps.yaml expands and sets only params that exist."""
    file = repo / "experiments" / "sweeps.yaml"
    params = params_mod.load(file=repo / "params.yaml")
    sweeps = yaml.safe_load(file.read_text())["sweeps"]
    assert sweeps
    for name, definition in sweeps.items():
        sweep.validate(name, sweep.expand(name, definition, file), params, file)


def test_results_block_is_replaced_not_duplicated(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Experiments\n\nintro\n")
    sweep.write_results("mix", {"description": "d"}, "| Experiment |\n|--|\n| a |", {"a": "Success"}, readme)
    sweep.write_results("other", {}, "| x |", {"b": "Failed"}, readme)
    sweep.write_results("mix", {}, "| Experiment |\n|--|\n| b |", {"b": "Success"}, readme)
    text = readme.read_text()
    assert text.count("<!-- sweep:mix -->") == 1 and "| b |" in text and "| a |" not in text
    assert "intro" in text and "failed: b" in text


def test_wait_polls_dvc_states_until_none_is_queued_or_running(monkeypatch, capsys):
    from synthdrive import tracking

    states = iter([{"a": "Queued", "b": "Queued"}, {"a": "Running", "b": "Queued"},
                   {"a": "Success", "b": "Failed"}])
    monkeypatch.setattr(tracking, "exp_rows", lambda root, revs=None: [
        {"name": n, "typ": "experiment", "state": s} for n, s in next(states).items()]
        + [{"name": "a", "typ": "baseline", "state": None}])
    assert sweep.wait(["a", "b"], Path("."), "HEAD", poll=0) == {"a": "Success", "b": "Failed"}
    assert "sweep: Queued: 0, Running: 0, Success: 1, Failed: 1" in capsys.readouterr().out
    # a finished experiment no longer in the queue counts as Success; one DVC never lists ends the wait
    monkeypatch.setattr(tracking, "exp_rows", lambda root, revs=None: [
        {"name": "a", "typ": "experiment", "state": None}])
    assert sweep.wait(["a", "c"], Path("."), "HEAD", poll=0) == {"a": "Success", "c": "Missing"}


def test_dry_run_prints_queue_commands(tmp_path, monkeypatch, capsys):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "sweeps.yaml").write_text(
        "sweeps:\n  w: {grid: {collect.width: [32, 48]}}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS.to_dict()))
    monkeypatch.chdir(tmp_path)
    sweep.main(["w", "--dry-run"])
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvc exp run --queue -n w-")
    assert lines[0].endswith("-S collect.width=32,48")
    assert "2 experiments" in out.err


def test_queued_sweep_names_and_params_are_what_dvc_lists(dvc_repo):
    """Queue (not run) a grid + an explicit run in a scratch git + DVC repo: DVC's experiment
    table (tracking.exp_rows, what `wait` polls) holds exactly the names the sweep waits for,
    each Queued with its own overrides applied."""
    from synthdrive import tracking

    definition = {"grid": {"a.x": [2, 3], "a.seeds": [[0], [1, 2]]}, "set": {"a.s": "a b: c"},
                  "runs": [{"a.x": 9}]}
    commands = sweep.queue_commands("q", definition, "q-1")
    repo = dvc_repo(files={"params.yaml": yaml.safe_dump({"a": {"x": 1, "seeds": [0], "s": "w"}}),
                           "dvc.yaml": yaml.safe_dump({"stages": {"s": {"cmd": "python -c pass", "params": ["a"]}}})})
    repo.init(commit="x")
    for cmd in commands:
        repo.dvc(*cmd, timeout=300)
    root = repo.path
    runs = sweep.expand("q", definition)
    names = [f"q-1-{i + 1}" for i in range(len(runs))]
    rows = sweep.mine(tracking.exp_rows(root), names)
    assert sorted(rows) == sorted(names) and len(names) == 5
    for name, run in zip(names, runs):
        assert rows[name]["state"] == "Queued"
        assert {k: rows[name]["params"][k] for k in run} == run
    assert rows["q-1-5"]["params"] == {"a.x": 9, "a.seeds": [0], "a.s": "a b: c"}


# slow: two experiments of a two-stage pipeline; test_queued_sweep_names_and_params_are_what_dvc_lists
# queues them by default
@pytest.mark.slow
def test_sweep_runs_two_queued_experiments_in_parallel_and_tracks_both(tmp_path):
    repo = tiny_headline_repo(tmp_path / "repo").init(commit="tiny pipeline")
    root = repo.path
    proc = repo.sh(sys.executable, "-m", "synthdrive.sweep", "tiny", "-j", "2", check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthdrive")
    parents = client.search_runs([experiment.experiment_id], "tags.role = 'pipeline'")
    assert len(parents) == 2
    names = sorted(p.info.run_name for p in parents)
    assert all(n.startswith("tiny-") for n in names)
    for parent in parents:
        assert parent.data.tags["kind"] == "queued" and parent.data.tags["dvc_exp_name"] == parent.info.run_name
        # The -S override reached the stages: the params on the parent and the headline agree.
        width = int(parent.data.params["collect.width"])
        assert parent.data.metrics == {"width": width, "frames": 3.0, "jobs": 2.0}
        children = client.search_runs([experiment.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(c.data.tags["stage"] for c in children) == ["collect", "headline"]
    assert sorted(int(p.data.params["collect.width"]) for p in parents) == [32, 48]

    readme = (root / "experiments" / "README.md").read_text()
    assert "<!-- sweep:tiny -->" in readme and "2/2 experiments succeeded" in readme
    table_rows = [line for line in readme.splitlines() if line.startswith("|") and "[tiny-" in line]
    assert len(table_rows) == 2 and any("| 48 " in row for row in table_rows), readme

    # What the MLflow UI shows: the REST API of `mlflow server` over the same store.
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", repo.env) as url:
        experiment_id = rest(url, "experiments/get-by-name", {"experiment_name": "synthdrive"},
                             get=True)["experiment"]["experiment_id"]
        found = rest(url, "runs/search", {"experiment_ids": [experiment_id],
                                          "filter": "tags.role = 'pipeline'"})["runs"]
    assert sorted(r["info"]["run_name"] for r in found) == names
    for r in found:
        metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        assert metrics["width"] == float(params["collect.width"])
