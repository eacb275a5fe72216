"""PNG plots of the segmentation results: mIoU per condition per variant, prediction grids and
the semantic-consistency score histogram."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthdrive import labels, viz  # noqa: E402


def miou_by_condition(summary: dict, path: Path, rare: Sequence[str] = ()) -> None:
    """Grouped bars: mIoU per condition (and overall/rare) per variant, error bars = seed spread."""
    variants = list(summary["variants"])
    conds = sorted(set().union(*(summary["variants"][v]["conditions"] for v in variants)))
    groups = ["overall"] + (["rare"] if any("rare" in summary["variants"][v] for v in variants) else []) + conds

    def stat(v: str, g: str) -> tuple[float, float]:
        s = summary["variants"][v].get(g) if g in ("overall", "rare") else summary["variants"][v]["conditions"].get(g)
        return (s["mean"] or 0.0, s["spread"] or 0.0) if s else (0.0, 0.0)

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * len(variants) / 2 + 2), 4))
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(groups))
    for i, v in enumerate(variants):
        means, spreads = zip(*(stat(v, g) for g in groups))
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=spreads, capsize=2, label=v)
    ax.set_xticks(x, [f"{g}*" if g in rare else g for g in groups], rotation=35, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Test mIoU per condition (mean over seeds, bars = seed std; * = rare)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prediction_grid(rows: Sequence[dict], variants: Sequence[str], space: str, path: Path) -> None:
    """One row per frame: image, ground truth, then each variant's prediction."""
    tiles, captions = [], []
    for row in rows:
        tiles += [row["image"], labels.colorize(row["label"], space)]
        captions += [row["caption"], "ground truth"]
        for v in variants:
            tiles.append(labels.colorize(row["preds"][v], space) if v in row["preds"] else np.zeros_like(row["image"]))
            captions.append(v)
    viz.save_png(viz.grid(tiles, captions, cols=2 + len(variants)), path)


def score_histogram(scores: Sequence[float], threshold: float, path: Path) -> None:
    """Histogram of per-frame consistency mIoU with the keep threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(list(scores), bins=20, range=(0, 100), color="tab:blue")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"keep >= {threshold}")
    kept = sum(s >= threshold for s in scores)
    ax.set_title(f"Synthetic frames: mIoU vs own layout ({kept}/{len(scores)} kept)")
    ax.set_xlabel("mIoU (%) of the real-trained segmenter's prediction")
    ax.set_ylabel("frames")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
