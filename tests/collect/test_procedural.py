"""The `procedural` collector (synthdrive.collect.procedural): split plans, train_mix validation
and byte-identical collects in the dataset format. The renderer itself is tested in
tests/render/test_render.py."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import yaml

from synthdrive import labels
from synthdrive.collect import collect
from synthdrive.collect.procedural import frame_seed, parse_mix, plan
from synthdrive.conditions import Condition, all_conditions
from synthdrive.dataset import Dataset, read_png
from synthdrive.params import ParamError, Params
from synthdrive.render import render_frame
from synthdrive.render.draw import class_ids
from tests.helpers import REPO

IDS = class_ids()


def _cfg(frames=None, mix=None, **render) -> Params:
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["collect"]
    cfg.update(source="procedural", height=32, width=64, seed=5)
    if frames is not None:
        cfg["procedural"]["frames"] = frames
    if mix is not None:
        cfg["procedural"]["train_mix"] = mix
    if render:
        cfg["procedural"]["render"] = render
    return Params(cfg, "collect")


def test_plan_counts_and_balanced_test_split():
    frames = plan(_cfg(frames={"train": 200, "val": 20, "test": 36}))
    by_split = Counter(split for split, *_ in frames)
    assert by_split == {"train": 200, "val": 20, "test": 36}
    test = Counter(cond for split, _, cond, _ in frames if split == "test")
    assert set(test) == set(all_conditions()) and set(test.values()) == {3}
    train = Counter(cond for split, _, cond, _ in frames if split == "train")
    assert train[Condition("clear", "day")] > 100          # the fleet-like mix: mostly clear day
    assert set(train) <= set(parse_mix(_cfg()["procedural.train_mix"])[0])
    seeds = [seed for *_, seed in frames]
    assert len(set(seeds)) == len(seeds)


def test_growing_one_split_keeps_the_other_splits_frames():
    small = {(s, i): (c, seed) for s, i, c, seed in plan(_cfg(frames={"train": 10, "val": 4, "test": 12}))}
    big = {(s, i): (c, seed) for s, i, c, seed in plan(_cfg(frames={"train": 30, "val": 4, "test": 12}))}
    assert all(big[key] == small[key] for key in small if key[0] != "train")
    assert frame_seed(5, "train", 0) != frame_seed(5, "val", 0)


@pytest.mark.parametrize("mix, needle", [
    ({"clear-day": 1.0, "snow-day": 0.5}, "snow-day"),
    ({"clear-day": 0, "rain-night": 0}, "every weight is 0"),
    ({"clear-day": -1}, "clear-day"),
    ({"clear-day": "lots"}, "clear-day"),
    ({}, "train_mix"),
    (["clear-day"], "train_mix"),
])
def test_bad_train_mix_names_the_param(mix, needle):
    with pytest.raises(ParamError) as err:
        plan(_cfg(mix=mix))
    message = str(err.value)
    assert "collect.procedural.train_mix" in message and needle in message


def test_zero_weight_leaves_a_condition_out():
    """How a `dvc exp run -S` override (merged into the default mix) drops a default key."""
    mix = {"clear-day": 0.0, "cloudy-dusk": 1.0, "rain-night": 0}
    assert parse_mix(mix)[0] == [Condition("cloudy", "dusk")]
    train = {cond for split, _, cond, _ in plan(_cfg(mix=mix)) if split == "train"}
    assert train == {Condition("cloudy", "dusk")}


def test_unknown_render_knob_names_the_param(tmp_path):
    with pytest.raises(ParamError, match="collect.procedural.render.*cars_density"):
        collect(_cfg(frames={"train": 1, "val": 0, "test": 0}, cars_density=2.0), "camvid11", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_collect_is_deterministic_and_writes_the_dataset_format(tmp_path):
    cfg = _cfg(frames={"train": 5, "val": 2, "test": 12})
    a = collect(cfg, "camvid11", tmp_path / "a")
    collect(cfg, "camvid11", tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    a.validate()
    assert len(a.split("train")) == 5 and len(a.split("val")) == 2 and len(a.split("test")) == 12
    record = a.records[0]
    assert record["source"] == "procedural" and isinstance(record["seed"], int)
    assert record["id"] == "train_000000" and record["instances"]
    assert {(r["weather"], r["time_of_day"]) for r in a.split("test")} == {tuple(c) for c in all_conditions()}
    label = a.label(record["id"])
    assert label.max() < labels.get("camvid11").num_classes
    # labels are the renderer's, converted; depth is uint16 millimetres, the sky saturated
    frame = render_frame(record["seed"], Condition(record["weather"], record["time_of_day"]), 32, 64)
    assert np.array_equal(label, labels.convert(frame.label, "procedural", "camvid11"))
    depth = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "a" / "depth" / "train_000000.png"))
    assert depth.dtype == np.uint16
    sky = frame.label == IDS["sky"]
    assert (depth[sky] == 65535).all()
    near = ~sky & (frame.depth < 60)
    assert np.abs(depth[near] / 1000.0 - frame.depth[near]).max() < 1e-3
    assert Dataset(tmp_path / "a").meta["depth_unit"] == "mm"
    assert read_png(tmp_path / "a" / "images" / "train_000000.png", "RGB").shape == (32, 64, 3)
