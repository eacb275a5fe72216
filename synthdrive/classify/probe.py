"""Linear probes on EfficientNet-Lite ImageNet features: the ``effnet`` classify backend.

Each frame becomes the globally pooled features of the ImageNet-pretrained EfficientNet-Lite
(synthdrive.pretrained.PooledFeatures), optionally with the heuristic's 36 image statistics
appended; then the heuristic's own fit: one class-balanced logistic regression per factor on the
train frames whose condition the source knows, weather on features standardised within each time
of day. Only the features differ from the heuristic backend (this class subclasses it), so the
stage, the cross-validation and the JSON artefact (``effnet.json``) are the same.

``standardise: domain`` z-scores the frames being classified with their *own* mean/std (and,
for weather, their own per-predicted-time-of-day groups) instead of the training frames': a
transductive correction for a classifier fit on one domain (rendered frames) and applied to
another (photos). It assumes the two domains hold roughly the same mix of conditions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from synthdrive.classify.features import feature_names as stat_names
from synthdrive.classify.heuristic import HeuristicClassifier
from synthdrive.conditions import TIMES_OF_DAY
from synthdrive.errors import UserError

MODEL_FILE = "effnet.json"
STANDARDISE = ("train", "domain")


class ProbeClassifier(HeuristicClassifier):
    """EfficientNet-Lite ImageNet features (+ image statistics) -> per-factor logistic regression."""

    name = "effnet"
    model_file = MODEL_FILE

    def __init__(self, variant: int = 0, pretrained: bool = True, size: tuple[int, int] | None = (128, 256),
                 layer: str = "head", image_stats: bool = False, standardise: str = "train",
                 l2: float = 0.01, iterations: int = 200, sky_id: int | None = None,
                 min_group: int = 5, batch_size: int = 16):
        super().__init__(l2, iterations, sky_id, min_group)
        if standardise not in STANDARDISE:
            raise UserError(f"params.yaml: classify.effnet.standardise={standardise!r} is unknown; "
                            f"choose one of: {', '.join(STANDARDISE)}")
        self.variant, self.pretrained, self.layer = int(variant), bool(pretrained), layer
        self.size = tuple(size) if size else None
        self.image_stats, self.standardise, self.batch_size = bool(image_stats), standardise, batch_size
        self._net = None

    def clone(self) -> "ProbeClassifier":
        other = ProbeClassifier(self.variant, self.pretrained, self.size, self.layer, self.image_stats,
                                self.standardise, self.l2, self.iterations, self.sky_id,
                                self.min_group, self.batch_size)
        other._net = self._net  # the frozen feature net is shared, never refit
        return other

    @property
    def net(self):
        if self._net is None:  # built on first use: loading a fit to predict needs it too
            from synthdrive.pretrained import PooledFeatures

            self._net = PooledFeatures(self.variant, self.pretrained, self.size, self.layer,
                                       self.batch_size)
        return self._net

    def describe(self) -> dict:
        return {"extractor": {"net": f"tf_efficientnet_lite{self.variant}",
                              "weights": "imagenet" if self.pretrained else "random",
                              "layer": self.layer, "size": list(self.size) if self.size else None,
                              "image_stats": self.image_stats}}

    def feature_names(self) -> list[str]:
        names = [f"effnet{self.variant}_{self.layer}_{i}" for i in range(self.net.dim)]
        return names + (stat_names() if self.image_stats else [])

    def features(self, images: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray] | None = None) -> np.ndarray:
        x = self.net(images)
        if self.image_stats:
            x = np.concatenate([x, super().features(images, labels)], 1)
        return x

    def predict_features(self, x: np.ndarray) -> list[dict]:
        if self.standardise == "train" or self.model is None or len(x) < 2:
            return super().predict_features(x)
        fitted = self.model
        own = {"mean": x.mean(0).tolist(), "std": (x.std(0) + 1e-6).tolist()}
        try:
            # pass 1: time of day on the domain's own z-scores
            self.model = {**fitted, **own, "time_groups": {}}
            times = [p["time_of_day"] for p in super().predict_features(x)]
            # pass 2: weather within the domain's own predicted-time-of-day groups
            groups = {}
            for t in TIMES_OF_DAY:
                rows = np.array([v == t for v in times], bool)
                if rows.sum() >= self.min_group:
                    groups[t] = {"mean": x[rows].mean(0).tolist(), "std": (x[rows].std(0) + 1e-6).tolist()}
            self.model = {**fitted, **own, "time_groups": groups}
            return super().predict_features(x)
        finally:
            self.model = fitted
