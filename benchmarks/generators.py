"""Generators at an equal, small training budget on one dataset: what each buys per CPU-second.

    .venv/bin/python benchmarks/generators.py --data DIR [--iterations 100] [--backends ...]

Per backend of ``generator.backend`` (params.yaml sizes, every backend's own settings but
``iterations`` set to the same budget): training seconds, sampling images/s (at the
synthesize.batch_size, the synthesize.<backend> sampler settings), the quality floor (L1 0-255 of
renders of held-back val layouts in their own condition against the real frames, beside the
paint-class-mean-colour floor) and diversity (mean pairwise L1 between renders of one layout
with different seeds). ``DIR`` is a dataset (e.g. a temp copy's data/raw made by stage collect);
frame conditions are the records' own weather/time_of_day.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from synthdrive import generate, params
from synthdrive.conditions import Condition
from synthdrive.dataset import Dataset
from synthdrive.generate.data import load_split
from synthdrive.generate.floor import diversity, floor_metrics


class WithSampler:
    """A generator whose sample() uses the synthesize stage's sampler settings (SDM's steps)."""

    def __init__(self, gen, sampler: dict):
        self.gen, self.sampler = gen, sampler

    def sample(self, layouts, conditions, seeds):
        return self.gen.sample(layouts, conditions, seeds, **self.sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset root with train and val splits")
    parser.add_argument("--iterations", type=int, default=100, help="training steps of every backend")
    parser.add_argument("--backends", nargs="+", default=["spade_gan", "pix2pix", "vae", "sdm"])
    parser.add_argument("--train-frames", type=int, default=None, help="first N train frames (default all)")
    parser.add_argument("--eval-frames", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3, help="renders per layout for diversity")
    parser.add_argument("--sample-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = params.load()
    cfg, synth = p["generator"].to_dict(), p["synthesize"]
    dataset = Dataset(args.data)
    conditions = {r["id"]: Condition(r["weather"], r["time_of_day"]) for r in dataset.records}
    height, width = cfg["height"], cfg["width"]
    train = load_split(dataset, "train", height, width, conditions, limit=args.train_frames)
    val = load_split(dataset, "val", height, width, conditions, limit=args.eval_frames)
    print(f"{args.data}: {len(train)} train frames at {height}x{width}, {len(val)} val layouts; "
          f"{args.iterations} iterations each; {args.threads} threads\n")
    print("| backend | iterations x batch | train s | s/iteration | sampling images/s | L1 | floor L1 | "
          "diversity L1 |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for backend in args.backends:
        own = {**cfg[backend], "iterations": args.iterations}
        if backend == "sdm":
            own["device"] = "cpu"
        gen = generate.create(params.Params({**cfg, "backend": backend, backend: own}), dataset.label_space.name)
        start = time.perf_counter()
        gen.train(train, None)
        train_s = time.perf_counter() - start
        sampler = synth[backend].to_dict() if backend in synth else {}
        images = args.sample_images if backend != "sdm" else max(2, args.sample_images // 16)
        layouts = np.repeat(val.layouts[:1].numpy(), images, 0)
        start = time.perf_counter()
        gen.sample(layouts, [Condition("rain", "night")] * images, list(range(images)),
                   batch_size=synth["batch_size"], **sampler)
        rate = images / (time.perf_counter() - start)
        timed = WithSampler(gen, sampler)
        floor, _ = floor_metrics(timed, train, val, args.eval_frames, all_conditions=False)
        spread = diversity(timed, val, args.eval_frames, args.seeds)
        print(f"| {backend} | {args.iterations} x {own['batch_size']} | {train_s:.0f} | "
              f"{train_s / args.iterations:.2f} | {rate:.3g} | {floor['l1_generator']:.1f} | "
              f"{floor['l1_floor']:.1f} | {spread:.1f} |", flush=True)


if __name__ == "__main__":
    main()
