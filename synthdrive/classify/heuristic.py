"""The default classifier: image statistics + a per-factor logistic regression fit on known truth.

The statistics are synthdrive.classify.features; the decision (which luminance means night,
which dark-channel level means fog) is a multinomial logistic regression per factor, fit on
the train frames whose condition the source knows, with class-balanced weights (the train mix
is mostly clear-day); weather on features standardised within each time of day (see the
class). Everything fitted lives in one small JSON file, so the thresholds are data,
inspectable and versioned by DVC, not constants in code. Written with torch rather than
scikit-learn, which the project does not depend on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synthdrive.classify.base import Classifier
from synthdrive.classify.features import feature_names, image_features
from synthdrive.conditions import TIMES_OF_DAY, WEATHERS
from synthdrive.dataset import write_json
from synthdrive.errors import UserError
from synthdrive.params_schema import UNSET

FACTORS = {"weather": WEATHERS, "time_of_day": TIMES_OF_DAY}
MODEL_FILE = "heuristic.json"


def _fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float,
                  iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression (L-BFGS, float64, deterministic).

    One thread: the matrices are tiny, and on a busy machine extra threads only add waiting
    (a 48-frame fit took 8 s with 2 threads under load, 0.1 s with one).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _lbfgs(x, y, n_classes, l2, iterations)
    finally:
        torch.set_num_threads(threads)


def _lbfgs(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float,
           iterations: int) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y).long()
    counts = torch.bincount(yt, minlength=n_classes).double()
    weight = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), 0.0)
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w.T + b, yt, weight=weight) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


class HeuristicClassifier(Classifier):
    """Image statistics -> (weather, time of day); ``fit_features`` before ``predict_features``,
    or ``load`` a fit.

    Time of day is fit on features standardised over all training frames. Weather is fit on
    features standardised within each time of day (at prediction: the predicted one): weather
    is then "how this frame differs from a typical frame of its time of day", which carries
    over to combinations the train split barely has (fog at night), where raw brightness would
    only say "dark, so like the few rainy nights seen".
    """

    name = "heuristic"
    needs_fit = True
    model_file = MODEL_FILE

    def __init__(self, l2: float = 0.01, iterations: int = 200, sky_id: int | None = None,
                 min_group: int = 5):
        self.l2, self.iterations, self.sky_id, self.min_group = l2, iterations, sky_id, min_group
        self.model: dict | None = None

    def clone(self) -> "HeuristicClassifier":
        """An unfit classifier with the same settings (one per cross-validation fold)."""
        return HeuristicClassifier(self.l2, self.iterations, self.sky_id, self.min_group)

    def feature_names(self) -> list[str]:
        return feature_names()

    def describe(self) -> dict:
        """What the fit JSON records besides the fit: the feature extractor's settings."""
        return {}

    def features(self, images: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray] | None = None) -> np.ndarray:
        labels = labels if labels is not None else [None] * len(images)
        return np.stack([image_features(im, lb, self.sky_id) for im, lb in zip(images, labels)])

    def _standardise(self, x: np.ndarray, times: Sequence[str | None]) -> np.ndarray:
        """Weather features: z-scores within each frame's time of day (global where unfit)."""
        groups = self.model["time_groups"]
        z = (x - np.array(self.model["mean"])) / np.array(self.model["std"])
        for t, stats in groups.items():
            rows = np.array([v == t for v in times], bool)
            if rows.any():
                z[rows] = (x[rows] - np.array(stats["mean"])) / np.array(stats["std"])
        return z

    def _fit_factor(self, z: np.ndarray, values: Sequence[str | None], factor: str) -> dict | None:
        known = np.array([v is not None for v in values])
        classes = sorted({v for v in values if v is not None}, key=FACTORS[factor].index)
        if not classes:
            return None
        y = np.array([classes.index(v) for v in np.asarray(values, dtype=object)[known]])
        if len(classes) == 1:  # one class seen: nothing to separate, always predict it
            w, b = np.zeros((1, z.shape[1])), np.zeros(1)
        else:
            w, b = _fit_logistic(z[known], y, len(classes), self.l2, self.iterations)
        return {"classes": classes, "weights": w.tolist(), "bias": b.tolist(),
                "train_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)}}

    def fit_features(self, x: np.ndarray, truths: dict[str, Sequence[str | None]]) -> dict:
        """Fit each factor on the frames where its truth is known; return what was fit."""
        times = list(truths.get("time_of_day", [None] * len(x)))
        groups = {}
        for t in TIMES_OF_DAY:
            rows = np.array([v == t for v in times], bool)
            if rows.sum() >= self.min_group:
                groups[t] = {"frames": int(rows.sum()), "mean": x[rows].mean(0).tolist(),
                             "std": (x[rows].std(0) + 1e-6).tolist()}
        self.model = {"features": self.feature_names(), **self.describe(),
                      "mean": x.mean(0).tolist(), "std": (x.std(0) + 1e-6).tolist(),
                      "l2": self.l2, "time_groups": groups, "factors": {}}
        z_global = (x - x.mean(0)) / (x.std(0) + 1e-6)
        for factor in FACTORS:
            if factor in truths:
                z = self._standardise(x, times) if factor == "weather" else z_global
                fit = self._fit_factor(z, truths[factor], factor)
                if fit:
                    self.model["factors"][factor] = fit
        if not self.model["factors"]:
            self.model = None
            raise UserError(f"classify: no train frame has a known weather or time of day, so the "
                            f"{self.name} classifier has nothing to fit; set classify.{self.name}.model "
                            f"to a {self.model_file} fit on another dataset, or use classify.backend: clip")
        return self.model

    def _apply(self, factor: str, z: np.ndarray, out: list[dict]) -> None:
        fit = self.model["factors"].get(factor)
        if fit is None:  # never seen in training: no opinion
            for o in out:
                o[factor] = None
            return
        logits = z @ np.array(fit["weights"]).T + np.array(fit["bias"])
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        for o, p in zip(out, prob):
            o["scores"][factor] = {c: round(float(p[fit["classes"].index(c)]), 4)
                                   if c in fit["classes"] else 0.0 for c in FACTORS[factor]}
            o[factor] = fit["classes"][int(p.argmax())]

    def predict_features(self, x: np.ndarray) -> list[dict]:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.predict_features before fit_features or load")
        out = [{"scores": {}} for _ in range(len(x))]
        self._apply("time_of_day", (x - np.array(self.model["mean"])) / np.array(self.model["std"]), out)
        self._apply("weather", self._standardise(x, [o["time_of_day"] for o in out]), out)
        return out

    def save(self, folder: Path) -> Path:
        path = Path(folder) / self.model_file
        write_json(path, self.model)
        return path

    def load(self, path: Path, param: str) -> None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"params.yaml: {param}={str(path)!r} is not a file; point it at a "
                            f"{self.model_file} written by the classify stage, or set it to {UNSET} to "
                            f"fit on this dataset's train split")
        model = json.loads(path.read_text())
        if model.get("features") != self.feature_names() or any(
                model.get(k) != v for k, v in self.describe().items()):
            raise UserError(f"{path}: fit with other image features than this code computes "
                            f"({self.describe() or 'the heuristic statistics'}); refit it "
                            f"(set {param} to {UNSET} and rerun classify)")
        self.model = model
