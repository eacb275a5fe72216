"""Timings of the sign transfer test on this machine: rendering crops and training steps.

    .venv/bin/python benchmarks/signs.py [--crops 400] [--steps 20] [--threads 1]
Prints a table; sizes the signs.data.counts / signs.train.epochs budget.
"""
import argparse
import time

import torch

from synthdrive.conditions import all_conditions
from synthdrive.signs import classifier
from synthdrive.signs.data import street_backgrounds
from synthdrive.signs.render import render_sign


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", type=int, default=400)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    conds = all_conditions()
    rows = []
    t = time.process_time()
    pool = street_backgrounds(conds, 1, 128, 256, 0)
    rows.append(("street scenes for backgrounds (per frame)", (time.process_time() - t) / len(conds) * 1e3, "ms"))
    t = time.process_time()
    for i in range(args.crops):
        render_sign(("stop", "warning")[i % 2], i, conds[i % len(conds)])
    rows.append(("render one 32x32 crop, synthetic background", (time.process_time() - t) / args.crops * 1e3, "ms"))
    t = time.process_time()
    for i in range(args.crops):
        frame = pool[conds[i % len(conds)]][0] if pool else None
        render_sign(("stop", "warning")[i % 2], i, conds[i % len(conds)], background=frame[:64, :64] if pool else None)
    rows.append(("render one 32x32 crop, street background", (time.process_time() - t) / args.crops * 1e3, "ms"))
    model = classifier.build_model(0)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randint(0, 255, (args.batch, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 2, (args.batch,))
    model.train()
    start = time.perf_counter()
    cpu = time.process_time()
    for _ in range(args.steps):
        loss = torch.nn.functional.cross_entropy(model(classifier.normalise(x)), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    n = args.steps * args.batch
    rows.append((f"ResNet18 train, 32x32, {args.threads} thread(s), per 1000 images (CPU)",
                 (time.process_time() - cpu) / n * 1e3, "s"))
    rows.append((f"ResNet18 train, 32x32, {args.threads} thread(s), per 1000 images (wall)",
                 (time.perf_counter() - start) / n * 1e3, "s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'time':>8}")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:8.2f} {unit}")
    print(f"\nepoch of 4000/class on {args.threads} thread(s): ~{rows[-2][1] * 8:.0f} CPU-s")


if __name__ == "__main__":
    main()
