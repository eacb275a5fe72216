"""The caption stage: template descriptions from label maps, and the template and LLaVA (tiny
random model) backends end to end through the stage. The condition phrases and retargeting the
captions use (synthdrive.prompts) are tested in tests/test_prompts.py."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from synthdrive import labels
from synthdrive.caption import make_captioner
from synthdrive.prompts import condition_phrase, mentions
from synthdrive.caption.template import describe
from synthdrive.conditions import TIMES_OF_DAY, WEATHERS, Condition
from tests.condition_helpers import build_tiny_llava, write_rendered_dataset
from tests.helpers import REPO, assert_factory_names_params

CAMVID = labels.get("camvid11")


def scene_label(h=60, w=90):
    """Sky on top, road below, a car in the lower left, a pedestrian far on the right."""
    label = np.full((h, w), CAMVID.index("building"), np.uint8)
    label[: h // 3] = CAMVID.index("sky")
    label[h // 2:, w // 3: 2 * w // 3] = CAMVID.index("road")
    label[48:58, 2:22] = CAMVID.index("car")
    label[22:30, 80:84] = CAMVID.index("pedestrian")
    return label


def test_template_description_places_and_counts_objects():
    label = scene_label()
    label[5:9, 5:8] = CAMVID.index("sign")
    text = describe(label, CAMVID, min_area=0.001,
                    instances={"car": 1, "pedestrian": 2, "stop_sign": 1, "warning_sign": 2})
    assert text.startswith("A street scene with ") and text.endswith(".")
    assert "a car on the left nearby" in text
    assert "two pedestrians on the right in the distance" in text
    assert "the sky above" in text and "the road ahead" in text
    # counted by the source under its own names, though camvid11 merges them into 'sign'
    assert "a stop sign and two warning signs on the left in the distance" in text
    assert not any(mentions(text, "weather", w) for w in WEATHERS)
    assert not any(mentions(text, "time_of_day", t) for t in TIMES_OF_DAY)


def test_template_uses_depth_for_near_and_far():
    label = scene_label()
    depth = np.full(label.shape, 30.0, np.float32)
    depth[label == CAMVID.index("car")] = 80.0       # low in the frame, yet far away
    depth[label == CAMVID.index("pedestrian")] = 5.0
    text = describe(label, CAMVID, depth=depth, min_area=0.001)
    assert "a car on the left in the distance" in text
    assert "a pedestrian on the right nearby" in text


def test_stages_template_captions_follow_the_resolved_condition(workdir):
    write_rendered_dataset(workdir.path / "data" / "raw", {"train": 12, "val": 6},
                           unknown_split="val")
    workdir.run("classify", {"classify": {"heuristic": {"cv_folds": 0}}}, in_process=True)
    workdir.run("caption", in_process=True)
    conditions = {r["id"]: r for r in map(json.loads, (workdir.path / "data/conditions.jsonl").open())}
    rows = [json.loads(line) for line in (workdir.path / "data/captions.jsonl").open()]
    assert len(rows) == 18
    for r in rows:
        assert set(r) >= {"id", "caption", "description", "condition"}
        assert r["condition"] == conditions[r["id"]]["condition"]
        assert r["caption"].endswith(f", {condition_phrase(Condition.parse(r['condition']))}.")
        assert r["caption"].startswith(r["description"].rstrip("."))
        assert re.fullmatch(r"A street scene with [a-z0-9 ,]+\.", r["description"]), r["description"]
    assert {r["condition_from"] for r in rows if r["split"] == "val"} == {"predicted"}
    assert {r["condition_from"] for r in rows if r["split"] == "train"} == {"truth"}
    metrics = json.loads((workdir.path / "metrics/caption.json").read_text())
    assert metrics["frames"] == 18 and metrics["distinct_descriptions"] > 1


def test_caption_stage_llava_end_to_end_with_tiny_llava(workdir, tmp_path):
    model = build_tiny_llava(tmp_path / "llava")
    write_rendered_dataset(workdir.path / "data" / "raw", {"train": 3})
    (workdir.path / "data/conditions.jsonl").write_text("".join(
        json.dumps({"id": f"train_{i:04d}", "weather": "fog", "time_of_day": "night"}) + "\n"
        for i in range(3)))
    with pytest.warns(UserWarning, match="load_in_4bit"):  # no bitsandbytes/CUDA here: says so
        workdir.run("caption", {
            "classify": {"use": "predicted"},
            "caption": {"backend": "llava", "llava": {"model_dir": str(model), "max_new_tokens": 5,
                                                       "batch_size": 2, "load_in_4bit": True}}},
                    in_process=True)
    rows = [json.loads(line) for line in (workdir.path / "data/captions.jsonl").open()]
    assert [r["condition"] for r in rows] == ["fog-night"] * 3
    assert all(r["backend"] == "llava" and r["caption"].endswith(", in fog at night.") for r in rows)
    assert all(isinstance(r["description"], str) for r in rows)


def test_llava_prompt_names_the_classes_and_forbids_conditions(tmp_path):
    from synthdrive.caption.llava import LlavaCaptioner

    query = yaml.safe_load((REPO / "params.yaml").read_text())["caption"]["llava"]["query"]
    captioner = LlavaCaptioner(str(build_tiny_llava(tmp_path / "llava")), query)
    prompt = captioner.prompt(["road", "traffic_sign"])
    assert "<image>" in prompt and "road, traffic sign" in prompt
    assert "weather" in prompt and "time of day" in prompt
    text = captioner.describe([np.zeros((40, 60, 3), np.uint8)], [["road"]])
    assert len(text) == 1 and isinstance(text[0], str)


def test_missing_llava_dir_and_bad_backend_name_the_param(tmp_path):
    assert_factory_names_params(make_captioner, "caption", "llava", "model_dir", "blip", tmp_path)


def test_dvc_caption_params_do_not_touch_classify():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["classify"]["params"] == ["classify"]
    assert "caption" in stages["caption"]["params"]
    assert "data/conditions.jsonl" in stages["caption"]["deps"]
