"""Per-frame cost of the default classify and caption backends (heuristic, template), single process.

    .venv/bin/python benchmarks/classify_caption.py [--frames 120]

Frames are rendered first (not timed). Prints wall-clock and CPU-time frames/s per step and size:
image statistics, the heuristic fit (per training frame), its prediction, and the template
description (labels + depth + instance counts).
"""
from __future__ import annotations

import argparse
import time

from synthdrive import labels
from synthdrive.caption.template import describe
from synthdrive.classify.heuristic import FACTORS, HeuristicClassifier
from synthdrive.conditions import all_conditions
from synthdrive.render import render_frame

SIZES = [(128, 256), (256, 512)]


def timed(fn, frames: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames per size (default 120)")
    args = parser.parse_args()
    space = labels.get("camvid11")
    table = labels.lookup("procedural", "camvid11")
    print(f"{'size':>9}  {'step':<22} {'frames/s':>9} {'CPU frames/s':>13}")
    for height, width in SIZES:
        conds = [all_conditions()[i % 12] for i in range(args.frames)]
        frames = [render_frame(i, c, height, width) for i, c in enumerate(conds)]
        images, labs = [f.image for f in frames], [table[f.label] for f in frames]
        truths = {f: [getattr(c, f) for c in conds] for f in FACTORS}
        clf = HeuristicClassifier(sky_id=space.index("sky"))
        clf.fit_features(clf.features(images[:24], labs[:24]),  # warm-up: torch, scipy first calls
                         {f: v[:24] for f, v in truths.items()})
        x = []
        rows = [("image statistics", lambda: x.append(clf.features(images, labs))),
                ("heuristic fit", lambda: clf.fit_features(x[0], truths)),
                ("heuristic predict", lambda: clf.predict_features(x[0])),
                ("template description", lambda: [describe(lb, space, f.depth, f.instances)
                                                  for lb, f in zip(labs, frames)])]
        for name, fn in rows:
            fps, cpu_fps = timed(fn, len(frames))
            print(f"{height:>4}x{width:<4}  {name:<22} {fps:>9.1f} {cpu_fps:>13.1f}")


if __name__ == "__main__":
    main()
