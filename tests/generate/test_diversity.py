"""The LPIPS-style diversity of the generator's health check (generate.floor:
diversity_feature_lpips_like, on ImageNet EfficientNet-Lite features without learned weights):
the distance itself, the metric, and train_generator logging it beside the L1 diversity. FID/KID
on the same features is tested in tests/segment/test_fid.py."""
from __future__ import annotations

import json
import types

import cv2
import numpy as np
import pytest
import torch

from tests.helpers import gen_params, truth

torch.set_num_threads(1)


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
def val(raw):
    from synthdrive.generate.data import load_split

    return load_split(raw, "val", 32, 64, truth(raw))


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


def test_train_generator_logs_the_feature_diversity_beside_the_l1(workdir, tiny_dataset):
    """metrics/train_generator.json, the stage run and the parent run get
    diversity_feature_lpips_like beside diversity_l1 (the periodic checks too)."""
    tiny_dataset(workdir.path / "data" / "raw", conditions_file=True)
    workdir.set_params({"generator": gen_params(), "classify": {"use": "auto"}})
    logged, parent = [], {}
    workdir.stub_stage_run(types.SimpleNamespace(log_metrics=lambda metrics, step=None: logged.append(dict(metrics)),
                                                 log_artifact=lambda *a, **k: None, log_parent_metrics=parent.update))
    workdir.run("train_generator", in_process=True)
    metrics = json.loads((workdir.path / "metrics/train_generator.json").read_text())
    assert metrics["diversity_feature_lpips_like"] > 0 and metrics["diversity_l1"] > 0
    assert parent["generator_diversity_feature_lpips_like"] == metrics["diversity_feature_lpips_like"]
    periodic = [m for m in logged if "l1_generator" in m and "trained_steps" not in m]
    assert periodic and all("diversity_feature_lpips_like" in m for m in periodic)
