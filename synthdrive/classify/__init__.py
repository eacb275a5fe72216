"""Condition classification: each frame's (weather, time of day) from its pixels.

Every backend has one interface (``synthdrive.classify.base.Classifier``): ``features(images,
labels) -> array`` (one row per frame), ``predict_features(x) -> [{"weather", "time_of_day",
"scores": {factor: {value: p}}}]`` and ``save(folder)`` (the stage's model artefact); one fit on
known truth (``needs_fit``) also ``fit_features(x, truths)`` and ``clone()`` (an unfit copy, for
cross-validation). The stage computes the features once per frame and uses them for the fit, the
cross-validation and the prediction.
Backends (``classify.backend``): ``heuristic`` (image statistics, fit on the train split's known
conditions; CPU, seconds), ``effnet`` (linear probes on EfficientNet-Lite ImageNet features, fit
the same way; CPU, ~25 s on the default data) and ``clip`` (zero-shot CLIP from a local model
folder: its features are image embeddings, nothing is fit).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from synthdrive.classify.base import Classifier
from synthdrive.classify.heuristic import FACTORS, HeuristicClassifier
from synthdrive.dataset import Dataset
from synthdrive.params import Params, resolve_path
from synthdrive.params_schema import is_unset

BACKENDS = ("heuristic", "effnet", "clip")


def make_classifier(cfg: Params, dataset: Dataset) -> Classifier:
    """The backend named by classify.backend, configured from its params section."""
    backend = cfg.choice("backend", BACKENDS)
    if backend in ("heuristic", "effnet"):
        h = cfg[backend]
        sky = dataset.label_space.index("sky") if "sky" in dataset.label_space.classes else None
        common = dict(l2=float(h["l2"]), iterations=int(h["iterations"]), sky_id=sky,
                      min_group=int(h["min_group"]))
        if backend == "heuristic":
            clf = HeuristicClassifier(**common)
        else:
            from synthdrive.classify.probe import ProbeClassifier
            from synthdrive.pretrained import VARIANTS

            variant = h.choice("variant", VARIANTS)
            clf = ProbeClassifier(variant=variant, pretrained=bool(h["pretrained"]),
                                  size=(int(h["height"]), int(h["width"])),
                                  layer=h.choice("layer", ("head", "stages")),
                                  image_stats=bool(h["image_stats"]),
                                  standardise=h.choice("standardise", ("train", "domain")),
                                  batch_size=int(cfg["batch_size"]), **common)
        if not is_unset(h["model"]):
            clf.load(resolve_path(h["model"]), f"classify.{backend}.model")
            clf.needs_fit = False
        return clf
    from synthdrive.classify.clip import ClipClassifier

    c = cfg["clip"]
    return ClipClassifier(c["model_dir"], c["prompts"].to_dict(), c["words"].to_dict(),
                          batch_size=int(c["batch_size"]), device=c["device"])


def truth_of(record: dict) -> dict[str, str | None]:
    return {f: record.get(f) for f in FACTORS}


def load_frames(dataset: Dataset, records: list[dict]):
    return [dataset.image(r["id"]) for r in records], [dataset.label(r["id"]) for r in records]


def map_frames(dataset: Dataset, records: list[dict], fn: Callable, batch_size: int = 32,
               desc: str = "classify") -> list:
    """``fn(images, labels)`` over ``records`` in order, loading frames batch by batch (bounded
    memory), its per-frame outputs concatenated (predictions, or feature rows)."""
    out: list = []
    with tqdm(total=len(records), desc=desc, unit="frame") as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            images, labels = load_frames(dataset, chunk)
            out += list(fn(images, labels))
            bar.update(len(chunk))
    return out


def cross_validate(clf, x: np.ndarray, truths: dict[str, list], folds: int) -> list[dict]:
    """Held-out predictions for every training frame, over ``folds`` folds.

    Folds are contiguous blocks within each condition, not a shuffle: consecutive video frames
    (CamVid) are near-duplicates, and a shuffled split would let each held-out frame's neighbour
    sit in the training fold; blocks per condition keep every condition in every training fold.
    """
    n = len(x)
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        groups.setdefault(tuple(truths[f][i] for f in truths), []).append(i)
    fold_of = np.zeros(n, int)
    for members in groups.values():
        fold_of[members] = np.arange(len(members)) * folds // len(members)
    predictions: list[dict] = [{} for _ in range(n)]
    for k in range(folds):
        held, keep = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        fold = clf.clone()
        fold.fit_features(x[keep], {f: [v[i] for i in keep] for f, v in truths.items()})
        for i, pred in zip(held, fold.predict_features(x[held])):
            predictions[i] = pred
    return predictions


def evaluate(records: list[dict], predictions: list[dict]) -> dict:
    """Accuracy and confusion matrix per factor, over the frames whose truth is known."""
    result = {}
    for factor, options in FACTORS.items():
        pairs = [(r[factor], p[factor]) for r, p in zip(records, predictions) if r.get(factor)]
        if not pairs:
            continue
        matrix = np.zeros((len(options), len(options)), int)
        for truth, pred in pairs:
            if pred is not None:
                matrix[options.index(truth), options.index(pred)] += 1
        result[factor] = {"accuracy": round(float(np.trace(matrix) / len(pairs)), 4),
                          "frames": len(pairs), "classes": list(options),
                          "confusion": matrix.tolist()}
    both = [(r, p) for r, p in zip(records, predictions) if all(r.get(f) for f in FACTORS)]
    if both:
        result["condition_accuracy"] = round(
            sum(all(r[f] == p[f] for f in FACTORS) for r, p in both) / len(both), 4)
    return result


def plot_confusions(per_split: dict[str, dict], path: Path) -> Path:
    """One confusion-matrix panel per (split, factor), row-normalised, counts written in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(per_split) or ["none"]
    factors = list(FACTORS)
    fig, axes = plt.subplots(len(splits), len(factors), figsize=(3.4 * len(factors), 3.2 * len(splits)),
                             squeeze=False)
    panels = []
    for row, split in enumerate(splits):
        for col, factor in enumerate(factors):
            m = per_split.get(split, {}).get(factor)
            if m:
                panels.append((axes[row][col], split, factor, m))
            else:
                axes[row][col].axis("off")
    for ax, split, factor, m in panels:
        matrix = np.array(m["confusion"], float)
        norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(m["classes"]))
        ax.set_xticks(ticks, m["classes"], rotation=45, fontsize=7)
        ax.set_yticks(ticks, m["classes"], fontsize=7)
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_title(f"{split} {factor}: {m['accuracy']:.0%}", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("truth", fontsize=7)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no frame with a known condition", ha="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
