"""The perceptual loss (synthdrive/generate/perceptual.py) on vs off at an equal CPU budget.

    nice -n 10 .venv/bin/python benchmarks/perceptual.py --camvid ../shared/data/camvid \
        [--backend spade_gan] [--weights 0 10] [--budget 240] [--val 101] [--out DIR]

Per ``perceptual_weight``: the backend (params.yaml settings and size, one torch thread) is first
timed for ``--probe`` steps (CPU-seconds per step, time.process_time), then trained from scratch
for ``budget / (CPU-s per step)`` steps, so every row spends about the same CPU time. Then, on the
first ``--val`` CamVid val layouts rendered in their own condition (seed = index): L1 (0-255) to
the real frames, beside the paint-class-mean-colour floor, and the Frechet distance between
pooled EfficientNet-Lite0 ImageNet head features (1280-d, frames resized to 128x256;
"EfficientNet-Lite features", not Inception: numbers are comparable between rows only; with
~100 frames the covariance is rank-deficient, so read differences of a few units as noise). The
CamVid folder is read directly (<split>/images, <split>/labels; sequence 0001TP = dusk, else
day). Writes a side-by-side grid (layout | real | one column per weight) to ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import linalg

from synthdrive import generate, params, viz
from synthdrive.conditions import Condition
from synthdrive.generate.data import TrainData
from synthdrive.labels import colorize
from synthdrive.params import Params
from synthdrive.pretrained import PooledFeatures


def load_camvid(root: Path, split: str, height: int, width: int, limit: int | None = None) -> TrainData:
    files = sorted((root / split / "images").glob("*.png"))[:limit]
    images, layouts, conditions = [], [], []
    for f in files:
        images.append(np.asarray(Image.open(f).convert("RGB").resize((width, height), Image.BILINEAR)))
        label = np.asarray(Image.open(root / split / "labels" / f.name))
        layouts.append(np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST)))
        conditions.append(Condition("clear", "dusk" if f.name.startswith("0001TP") else "day"))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return TrainData([f.stem for f in files], x, torch.from_numpy(np.stack(layouts)), conditions, 11)


def to_uint8(data: TrainData) -> np.ndarray:
    return ((data.images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def floor_l1(train: TrainData, val: TrainData) -> float:
    """Paint each class its mean training colour (per condition time of day ignored: the val split is day)."""
    img, lab = to_uint8(train).reshape(-1, 3).astype(np.float64), train.layouts.numpy().reshape(-1)
    colours = np.stack([img[lab == c].mean(0) if (lab == c).any() else img.mean(0) for c in range(256)])
    painted = colours[val.layouts.numpy()]
    return float(np.abs(painted - to_uint8(val)).mean())


def make(cfg: dict, backend: str, weight: float, iterations: int):
    cfg = copy.deepcopy(cfg)
    cfg["backend"] = backend
    cfg[backend].update(perceptual_weight=float(weight), iterations=int(iterations))
    return generate.create(Params(cfg), "camvid11")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=Path("../shared/data/camvid"))
    parser.add_argument("--backend", default="spade_gan", choices=["spade_gan", "pix2pix", "vae"])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument("--budget", type=float, default=240.0, help="training CPU-seconds per weight")
    parser.add_argument("--probe", type=int, default=4, help="steps timed to size the budget")
    parser.add_argument("--val", type=int, default=101)
    parser.add_argument("--rows", type=int, default=6, help="val layouts in the grid")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/perceptual"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = params.load()["generator"].to_dict()
    height, width = cfg["height"], cfg["width"]
    train = load_camvid(args.camvid, "train", height, width)
    val = load_camvid(args.camvid, "val", height, width, args.val)
    real = to_uint8(val)
    features = PooledFeatures(0, size=(128, 256), layer="head")
    real_features = features(real)
    layouts, seeds = val.layouts.numpy(), list(range(len(val)))
    print(f"CamVid: {len(train)} train frames at {height}x{width}, {len(val)} val layouts; {args.backend}; "
          f"budget {args.budget:.0f} CPU-s per weight, 1 torch thread")
    print(f"paint-class-mean-colour floor L1 {floor_l1(train, val):.1f}\n")
    rows, renders = [], {}
    for weight in args.weights:
        probe = make(cfg, args.backend, weight, args.probe)
        cpu = time.process_time()
        probe.train(train, None)
        per_step = (time.process_time() - cpu) / args.probe
        iterations = max(1, int(args.budget / per_step))
        gen = make(cfg, args.backend, weight, iterations)
        logged = []
        cpu = time.process_time()
        gen.train(train, None, on_step=lambda step, losses, logged=logged: logged.append(losses))
        cpu = time.process_time() - cpu
        fake = gen.sample(layouts, val.conditions, seeds)
        renders[weight] = fake
        l1 = float(np.abs(fake.astype(np.float64) - real).mean())
        fid = frechet(real_features, features(fake))
        percept = [v for k, v in logged[-1].items() if "perceptual" in k]
        rows.append((weight, per_step, iterations, cpu, l1, fid, percept[0] if percept else None))
        print(f"weight {weight}: {per_step:.2f} CPU-s/step, {iterations} steps, {cpu:.0f} CPU-s, "
              f"L1 {l1:.1f}, FID {fid:.1f}", flush=True)
    print("\n| perceptual_weight | CPU-s / step | steps | train CPU-s | val L1 (0-255) | EffNet-Lite0 FID "
          "| last perceptual term |")
    print("|---|---|---|---|---|---|---|")
    for weight, per_step, iterations, cpu, l1, fid, percept in rows:
        term = f"{percept:.3f}" if percept is not None else "-"
        print(f"| {weight:g} | {per_step:.2f} | {iterations} | {cpu:.0f} | {l1:.1f} | {fid:.1f} | {term} |")
    n = min(args.rows, len(val))
    tiles, captions = [], []
    for i in range(n):
        tiles += [colorize(layouts[i], "camvid11"), real[i]] + [renders[w][i] for w in args.weights]
        captions += [val.ids[i][:18], "real"] + [f"perceptual {w:g}" for w in args.weights]
    path = viz.save_png(viz.grid(tiles, captions, cols=2 + len(args.weights)),
                        args.out / f"{args.backend}_grid.png")
    print(f"\ngrid: {path}")


if __name__ == "__main__":
    main()
