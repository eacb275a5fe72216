"""Synthesis speed of the in-project samplers at the params.yaml sizes, beside the machine's
matmul throughput measured in the same run.

    .venv/bin/python benchmarks/synthesis.py [--images 32] [--sdm-images 2] [--threads 2]

Per backend: images/s of ``Generator.sample`` (untrained weights: speed does not depend on
them), FLOPs per image (torch's FlopCounterMode over one network pass, times the passes a
sample needs: 1 for the GAN, steps x 2 for SDM with classifier-free guidance), the achieved
GFLOP/s, and its ratio to a float32 matmul's GFLOP/s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from synthdrive import generate, labels, params
from synthdrive.conditions import Condition
from synthdrive.generate.data import condition_ids, one_hot


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def pass_flops(gen, height: int, width: int) -> int:
    """FLOPs of one network pass for one image."""
    seg = one_hot(torch.zeros(1, height, width, dtype=torch.uint8), labels.get(gen.label_space).num_classes)
    weather, time_ = condition_ids([Condition("rain", "night")])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if gen.backend == "spade_gan":
            gen.net(seg, weather, time_, torch.zeros(1, gen.net.config.z_dim))
        else:
            gen.unet(torch.zeros(1, 3, height, width), torch.tensor(10), seg, weather, time_)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images sampled by the GAN")
    parser.add_argument("--sdm-images", type=int, default=2, help="images sampled by SDM")
    parser.add_argument("--sdm-steps", type=int, default=None,
                        help="DDIM steps (default: synthesize.sdm.steps); the table names the steps used")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = params.load()
    cfg, sampler = p["generator"], p["synthesize"]
    space = p["labels.space"]
    matmul = matmul_gflops()
    print(f"threads {args.threads}; float32 matmul 1024^3: {matmul:.1f} GFLOP/s\n")
    print("| backend | size | passes/image | GFLOP/image | images/s | GFLOP/s | FLOP ratio vs matmul |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for backend, images in (("spade_gan", args.images), ("sdm", args.sdm_images)):
        gen = generate.create(params.Params({**cfg.to_dict(), "backend": backend,
                                             "sdm": {**cfg["sdm"].to_dict(), "device": "cpu"}}), space)
        height, width = gen.size
        kwargs = sampler["sdm"].to_dict() if backend == "sdm" else {}
        if kwargs and args.sdm_steps:
            kwargs["steps"] = args.sdm_steps
        passes = kwargs.get("steps", 1) * (2 if backend == "sdm" else 1)
        flops = pass_flops(gen, height, width) * passes
        layouts = np.zeros((images, height, width), np.uint8)
        conds = [Condition("rain", "night")] * images
        gen.sample(layouts[:1], conds[:1], [0], **{**kwargs, "steps": 1} if kwargs else {})  # warm-up
        start = time.perf_counter()
        gen.sample(layouts, conds, list(range(images)), batch_size=sampler["batch_size"], **kwargs)
        seconds = time.perf_counter() - start
        achieved = flops * images / seconds / 1e9
        print(f"| {backend} | {height}x{width} | {passes} | {flops / 1e9:.2f} | {images / seconds:.3g} | "
              f"{achieved:.1f} | {achieved / matmul:.0%} |", flush=True)


if __name__ == "__main__":
    main()
