"""Seconds per training iteration: mmengine's Runner vs a bare forward/backward loop of the same
model, batch and data pipeline, in one process (goal: Runner <= 1.15x bare).

    .venv/bin/python benchmarks/segmenter.py [--data data/raw] [--iters 30] [--model mask2former]

Without --data it writes a small random street-like dataset at the params' size to a temp dir.
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _toy_dataset(root: Path, height: int, width: int, n: int = 16) -> Path:
    from synthdrive.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(root, "camvid11", source="benchmark") as dw:
        for i in range(n):
            label = np.full((height, width), 3, np.uint8)
            label[: height // 2] = 0
            label[height // 3: height // 2, rng.integers(0, width // 2):][:, : width // 4] = 8
            image = np.clip(np.stack([label * 20.0] * 3, -1) + rng.normal(0, 10, (height, width, 3)), 0, 255)
            dw.add({"id": f"b{i:03d}", "split": "train", "weather": "clear", "time_of_day": "day",
                    "source": "benchmark"}, image.astype(np.uint8), label)
    return root


def main() -> None:
    from mmengine.runner import Runner

    from synthdrive import params
    from synthdrive.segment.train import run_config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--model", default=None, help="segmenter.model.name override")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-denormals", action="store_true",
                        help="skip torch.set_flush_denormal(True), which synthdrive's training sets")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.keep_denormals:
        torch.set_flush_denormal(True)
    p = params.load()
    seg = p["segmenter"]
    if args.model:
        seg.to_dict()["model"]["name"] = args.model
    seg.to_dict()["train"].update(iters=args.iters, checkpoint_interval=10 ** 6, log_interval=10 ** 6)
    tmp = Path(tempfile.mkdtemp(prefix="segbench-"))
    data = args.data or _toy_dataset(tmp / "raw", int(seg["height"]), int(seg["width"]))
    cfg = run_config(seg, label_space=p["labels.space"], variant="real", seed=0, raw=data,
                     synthetic=tmp / "none", kept=tmp / "none", work_dir=tmp / "work")

    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    # Bare loop first, on its own freshly built model and the same dataloader config.
    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = torch.optim.AdamW(model.parameters(), lr=float(seg["train.lr"]),
                              weight_decay=float(seg["train.weight_decay"]))
    stream = iter(Runner.build_dataloader(cfg.train_dataloader, seed=0))
    clip = seg["train.grad_clip"]
    bare_times = []
    model.train()
    for i in range(args.iters):
        start = time.perf_counter()
        data_batch = model.data_preprocessor(next(stream), True)
        loss, _ = model.parse_losses(model(**data_batch, mode="loss"))
        optim.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
        optim.step()
        if i >= args.warmup:
            bare_times.append(time.perf_counter() - start)

    runner = Runner.from_cfg(cfg)
    runner.train()
    runner_times = runner.message_hub.get_scalar("train/time").data[0][args.warmup:]

    r, b = float(np.mean(runner_times)), float(np.mean(bare_times))
    denormals = "kept" if args.keep_denormals else "flushed"
    print("\n| model | input | batch | threads | denormals | Runner s/iter | bare s/iter | Runner / bare |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {seg['model.name']} | {seg['height']}x{seg['width']} | {seg['train.batch_size']} | {args.threads} "
          f"| {denormals} | {r:.3f} | {b:.3f} | {r / b:.2f}x |")


if __name__ == "__main__":
    main()
