"""Has the generator learned anything? The calibration's floor (shared/notes/generators.md).

- L1 (0-255) between a held-back real frame and the generator's render of its layout in its own
  condition, against the floor "paint each class its mean training colour for that condition".
  A generator that does not clearly beat the floor has learned nothing beyond class colours.
- Mean grey level per condition of renders of the same layouts, against the real frames of that
  condition, both as a ratio to the reference condition (clear-day when present): dusk and night
  renders must be darker by about the real data's ratio.
- Diversity (against mode collapse): mean pairwise distance between renders of one layout in
  its own condition with different seeds, twice: pixel L1 (0-255, ``diversity_l1``) and an
  LPIPS-style distance on ImageNet EfficientNet-Lite features (``diversity_feature_lpips_like``,
  :class:`FeatureDistance`: LPIPS's recipe without its learned linear layer, an offline analogue,
  not LPIPS). 0 means the generator ignores its latent.
"""
from __future__ import annotations

import warnings
from collections import Counter
from itertools import combinations

import numpy as np
import torch

from synthdrive.conditions import Condition
from synthdrive.generate.data import TrainData, to_uint8
from synthdrive.labels import colorize

GREY = np.array([0.299, 0.587, 0.114])
RATIO_TOLERANCE = 0.15  # |generated ratio - real ratio| beyond this is a miss (CamVid dusk: 0.51)


def brightness(images: np.ndarray) -> float:
    return float((images.astype(np.float64) @ GREY).mean())


def mean_colour_floor(train: TrainData, layouts: np.ndarray, conditions: list[Condition]) -> np.ndarray:
    """Each pixel painted the mean training colour of its class in its frame's condition (the
    class's mean over all conditions where that condition never shows the class)."""
    images = to_uint8(train.images).astype(np.float64)
    ids = train.layouts.numpy().astype(np.int64)
    ids[ids >= train.num_classes] = train.num_classes  # ignore -> its own "class"
    k = train.num_classes + 1

    def colour_table(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(ids[mask].ravel(), minlength=k)
        sums = np.stack([np.bincount(ids[mask].ravel(), images[mask][..., c].ravel(), minlength=k)
                         for c in range(3)], 1)
        return sums / np.maximum(counts, 1)[:, None], counts

    overall, _ = colour_table(np.ones(len(train), bool))
    out = []
    cond_of = np.array([str(c) for c in train.conditions])
    tables: dict[str, np.ndarray] = {}
    for layout, cond in zip(layouts, conditions):
        key = str(cond)
        if key not in tables:
            table, counts = colour_table(cond_of == key)
            tables[key] = np.where(counts[:, None] > 0, table, overall)
        lay = layout.astype(np.int64)
        lay[lay >= train.num_classes] = train.num_classes
        out.append(tables[key][lay])
    return np.stack(out).round().astype(np.uint8)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def reference_condition(train: TrainData) -> Condition:
    present = Counter(train.conditions)
    clear_day = Condition("clear", "day")
    return clear_day if clear_day in present else present.most_common(1)[0][0]


def floor_metrics(generator, train: TrainData, val: TrainData, frames: int, seed: int = 0,
                  all_conditions: bool = True) -> tuple[dict, list[str]]:
    """(metrics, warnings). ``all_conditions`` also renders the val layouts in every training
    condition for the brightness check (``frames`` x conditions samples)."""
    n = min(frames, len(val))
    layouts = val.layouts[:n].numpy()
    real = to_uint8(val.images)[:n]
    seeds = [seed + i for i in range(n)]
    own = generator.sample(layouts, val.conditions[:n], seeds)
    floor = mean_colour_floor(train, layouts, val.conditions[:n])
    metrics = {"l1_generator": l1(own, real), "l1_floor": l1(floor, real), "eval_frames": n}
    problems = []
    if not metrics["l1_generator"] < metrics["l1_floor"]:
        problems.append(f"L1 to the real frames {metrics['l1_generator']:.1f} does not beat the "
                        f"paint-class-mean-colour floor {metrics['l1_floor']:.1f}: the generator "
                        f"has learned nothing beyond class colours (train longer or larger)")
    if not all_conditions:
        return metrics, problems
    ref = reference_condition(train)
    real_images = to_uint8(train.images)
    cond_of = [str(c) for c in train.conditions]
    conditions = sorted(set(train.conditions), key=str)
    generated = {c: brightness(generator.sample(layouts, [c] * n, seeds)) for c in conditions}
    for c in conditions:
        real_b = brightness(real_images[[i for i, k in enumerate(cond_of) if k == str(c)]])
        metrics[f"brightness/{c}/generated"] = generated[c]
        metrics[f"brightness/{c}/real"] = real_b
    for c in conditions:
        gen_ratio = generated[c] / max(generated[ref], 1e-6)
        real_ratio = metrics[f"brightness/{c}/real"] / max(metrics[f"brightness/{ref}/real"], 1e-6)
        metrics[f"brightness_ratio/{c}/generated"] = gen_ratio
        metrics[f"brightness_ratio/{c}/real"] = real_ratio
        if abs(gen_ratio - real_ratio) > RATIO_TOLERANCE:
            problems.append(f"{c} renders have brightness {gen_ratio:.2f} x {ref} but real {c} "
                            f"frames {real_ratio:.2f} x: the condition is not learned")
    return metrics, problems


def diversity_renders(generator, val: TrainData, frames: int, seeds: int, seed: int = 0) -> np.ndarray:
    """uint8 (layouts, seeds, H, W, 3): ``seeds`` renders of each of the first ``frames`` val
    layouts in its own condition."""
    n = min(frames, len(val))
    layouts = np.repeat(val.layouts[:n].numpy(), seeds, 0)
    conditions = [c for c in val.conditions[:n] for _ in range(seeds)]
    renders = generator.sample(layouts, conditions, [seed + i for i in range(n * seeds)])
    return renders.reshape(n, seeds, *renders.shape[1:])


def pairwise_l1(renders: np.ndarray) -> float:
    """Mean over layouts and seed pairs of the L1 (0-255) between renders (layouts, seeds, H, W, 3)."""
    renders = renders.astype(np.float64)
    return float(np.mean([np.abs(renders[:, a] - renders[:, b]).mean()
                          for a, b in combinations(range(renders.shape[1]), 2)]))


def diversity(generator, val: TrainData, frames: int, seeds: int, seed: int = 0) -> float:
    """Mean pairwise L1 (0-255) between ``seeds`` renders of each of the first ``frames`` val layouts."""
    return pairwise_l1(diversity_renders(generator, val, frames, seeds, seed))


class FeatureDistance:
    """An LPIPS-style image distance on ImageNet EfficientNet-Lite features, with no learned weights
    of its own: an offline analogue of LPIPS (Zhang et al. 2018), not LPIPS.

    As LPIPS: the encoder's multi-scale maps (``synthdrive.pretrained.encoder``, strides
    2/4/8/16/32; lite0 channels 16/24/40/112/320) of both images, each unit-normalised along its
    channels at every position, squared differences summed over channels and averaged over
    positions, summed over the scales. Unlike LPIPS: no learned per-channel linear layer
    (LPIPS's ``lpips=False`` baseline), and EfficientNet-Lite with ImageNet mean/std, not
    AlexNet/VGG. 0 for identical images, at most 4 per scale (20 in all). Images are taken at
    their own size (uint8, N x H x W x 3)."""

    OUT_INDICES = (0, 1, 2, 3, 4)

    def __init__(self, variant: int = 0, pretrained: bool = True, batch_size: int = 16):
        from synthdrive import pretrained as effnet

        self.net = effnet.encoder(variant, pretrained, out_indices=self.OUT_INDICES).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, images: np.ndarray) -> list[torch.Tensor]:
        """Per scale, the channel-unit-normalised maps (N x C x h x w, float64) of uint8 images."""
        from synthdrive.pretrained import preprocess

        images = np.asarray(images)
        scales: list[list[torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            maps = self.net(preprocess(images[start:start + self.batch_size]))
            scales.append([(f / (f.norm(dim=1, keepdim=True) + 1e-10)).double() for f in maps])
        return [torch.cat(per_scale) for per_scale in zip(*scales)]

    @staticmethod
    def between(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """Distance (N,) between the :meth:`features` of two image sets, row by row."""
        return sum(((fa - fb) ** 2).sum(1).mean((1, 2)) for fa, fb in zip(a, b))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distance (N,) between two uint8 image sets (N x H x W x 3), row by row."""
        return self.between(self.features(a), self.features(b)).numpy()


def pairwise_feature_lpips_like(renders: np.ndarray, distance: FeatureDistance) -> float:
    """Mean over layouts of the mean over seed pairs of :class:`FeatureDistance` between renders
    (layouts, seeds, H, W, 3)."""
    n, seeds = renders.shape[:2]
    feats = distance.features(renders.reshape(n * seeds, *renders.shape[2:]))
    feats = [f.reshape(n, seeds, *f.shape[1:]) for f in feats]
    pairs = [distance.between([f[:, a] for f in feats], [f[:, b] for f in feats])
             for a, b in combinations(range(seeds), 2)]
    return float(torch.stack(pairs, 1).mean(1).mean())


def diversity_metrics(generator, val: TrainData, frames: int, seeds: int, seed: int = 0,
                      distance: FeatureDistance | None = None) -> dict[str, float]:
    """``diversity_l1`` and (with a ``distance``) ``diversity_feature_lpips_like`` of one set of
    renders (``seeds`` per each of the first ``frames`` val layouts)."""
    renders = diversity_renders(generator, val, frames, seeds, seed)
    out = {"diversity_l1": pairwise_l1(renders)}
    if distance is not None:
        out["diversity_feature_lpips_like"] = pairwise_feature_lpips_like(renders, distance)
    return out


def diversity_tiles(generator, val: TrainData, rows: int, seeds: int,
                    seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Tiles for a grid: per val layout, its label, then its renders with ``seeds`` seeds."""
    n = min(rows, len(val))
    layouts = val.layouts[:n].numpy()
    tiles, captions = [], []
    for i in range(n):
        renders = generator.sample(layouts[[i] * seeds], [val.conditions[i]] * seeds,
                                   [seed + k for k in range(seeds)])
        tiles += [colorize(layouts[i], generator.label_space), *renders]
        captions += [val.ids[i][:18]] + [f"seed {seed + k}" for k in range(seeds)]
    return tiles, captions


def warn_loudly(problems: list[str]) -> None:
    for problem in problems:
        banner = "!" * 78
        warnings.warn(f"\n{banner}\nGENERATOR QUALITY FLOOR MISSED: {problem}\n{banner}", stacklevel=2)


def sample_grid_tiles(generator, val: TrainData, rows: int,
                      conditions: list[Condition], seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Tiles for a grid: per val layout, its label, its real frame, then its renders."""
    n = min(rows, len(val))
    layouts = val.layouts[:n].numpy()
    real = to_uint8(val.images)[:n]
    renders = {c: generator.sample(layouts, [c] * n, [seed + i for i in range(n)]) for c in conditions}
    space = generator.label_space
    tiles, captions = [], []
    for i in range(n):
        tiles += [colorize(layouts[i], space), real[i]] + [renders[c][i] for c in conditions]
        captions += [val.ids[i][:18], f"real {val.conditions[i]}"] + [str(c) for c in conditions]
    return tiles, captions
