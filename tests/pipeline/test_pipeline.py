"""The whole DVC pipeline end to end at tiny size: `dvc repro` in a scratch copy of the repo
(tests/conftest.py's `tiny_pipeline`, once per session; tests/report/test_report.py checks its
report page in a browser)."""
from __future__ import annotations

import yaml

from synthdrive.dataset import Dataset


def test_repro_builds_every_stage(tiny_pipeline):
    repo, first = tiny_pipeline
    work = repo.path
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    for name in stages:
        if "foreach" not in stages[name] and "matrix" not in stages[name]:
            assert f"Running stage '{name}'" in first.stdout, f"stage {name} did not run"
    raw = Dataset(work / "data/raw")
    raw.validate()
    assert {r["split"] for r in raw.records} == {"train", "val", "test"}
    assert (work / "metrics/collect_samples.png").stat().st_size > 1000


def test_every_segmenter_variant_trains_and_is_evaluated(tiny_pipeline):
    """All four variants end to end: real and real_aug in train_segmenter, real_synth and
    real_aug_synth (on filter_synthetic's kept frames) in train_segmenter_synth; eval.json lists
    each with per-condition, per-class and gain entries."""
    import json

    from synthdrive.segment.train import VARIANTS

    repo, first = tiny_pipeline
    work = repo.path
    assert VARIANTS == ("real", "real_aug", "real_synth", "real_aug_synth")
    for stage in ("train_segmenter@real-0", "train_segmenter@real_aug-0",
                  "train_segmenter_synth@real_synth-0", "train_segmenter_synth@real_aug_synth-0"):
        assert f"Running stage '{stage}'" in first.stdout, f"stage {stage} did not run"
    trained = {v: json.loads((work / f"models/segmenter/{v}-0/train.json").read_text()) for v in VARIANTS}
    real_seen = {v: t["real_samples_seen"] for v, t in trained.items()}
    assert len(set(real_seen.values())) == 1, f"unequal real exposure: {real_seen}"
    combined = trained["real_aug_synth"]
    assert combined["extra_samples_seen"] == trained["real_aug"]["extra_samples_seen"] == \
        trained["real_synth"]["extra_samples_seen"] > 0
    assert combined["extra_samples_seen.shifted"] + combined["extra_samples_seen.synthetic"] == \
        combined["extra_samples_seen"]
    assert abs(combined["extra_samples_seen.shifted"] - combined["extra_samples_seen.synthetic"]) <= 1
    ev = json.loads((work / "metrics/eval.json").read_text())
    assert set(ev["variants"]) == set(VARIANTS)
    assert set(ev["gains"]) == {"real_aug", "real_synth", "real_aug_synth"}
    stats = ev["variants"]["real_aug_synth"]
    assert stats["conditions"] and stats["per_class_iou"] and "overall" in ev["gains"]["real_aug_synth"]
    assert "real_aug_synth" in (work / "metrics/report.html").read_text()


def test_second_repro_reruns_nothing(tiny_pipeline):
    repo, _ = tiny_pipeline
    second = repo.dvc("repro")
    assert "Running stage" not in second.stdout, second.stdout


def test_mlflow_parent_with_stage_children(tiny_pipeline):
    import mlflow

    repo, _ = tiny_pipeline
    work = repo.path
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synthdrive")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "pipeline"]
    assert len(parents) == 1, "one dvc repro = one parent run"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    stage_names = {r.info.run_name for r in children}
    assert "collect" in stage_names
    collect = next(r for r in children if r.info.run_name == "collect")
    assert collect.data.metrics["frames.train"] == 24
    assert collect.data.params["collect.source"] == "procedural"
    assert parents[0].data.params["labels.space"] == "camvid11"
    assert any(a.path == "collect_samples.png" for a in client.list_artifacts(collect.info.run_id))


def test_param_change_reruns_only_the_stages_that_read_it(tiny_pipeline):
    repo, _ = tiny_pipeline
    work = repo.path
    params_file = work / "params.yaml"
    original = params_file.read_text()
    try:
        params = yaml.safe_load(original)
        params["collect"]["procedural"]["frames"]["val"] += 1
        params_file.write_text(yaml.safe_dump(params))
        assert "collect" in _status(repo)
        params = yaml.safe_load(original)
        declared = {p for p in yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["collect"]["params"]}
        other = next((k for k in params if k not in declared), None)
        params[other or "unrelated"] = {"changed": True} if other is None else _touched(params[other])
        params_file.write_text(yaml.safe_dump(params))
        assert "collect" not in _status(repo)
    finally:
        params_file.write_text(original)


def test_a_new_file_in_a_folder_a_param_names_reruns_the_stages_that_read_it(tiny_pipeline):
    """Path params are deps (${param} in dvc.yaml): every one is 'unset' here, the placeholder
    folder, so a file added there changes exactly the stages that read a path param."""
    repo, _ = tiny_pipeline
    work = repo.path
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert "unset" in [d["path"] for d in lock["collect"]["deps"]]
    extra = work / "unset" / "new.png"
    extra.write_bytes(b"new frame")
    try:
        assert set(_status(repo)) == {"collect", "sign_data", "classify", "caption", "train_generator",
                                      "synthesize", "evaluate"}
    finally:
        extra.unlink()
    assert not _status(repo)


def _touched(section: dict) -> dict:
    """The section with one scalar value changed."""
    for key, value in section.items():
        if isinstance(value, bool):
            return {**section, key: not value}
        if isinstance(value, (int, float)):
            return {**section, key: value + 1}
        if isinstance(value, dict):
            return {**section, key: _touched(value)}
    return {**section, "_changed": 1}


def _status(repo) -> dict:
    import json

    return json.loads(repo.dvc("status", "--json").stdout or "{}")
