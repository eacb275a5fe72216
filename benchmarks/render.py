"""Procedural renderer throughput: frames/s including labels and depth, single process.

    .venv/bin/python benchmarks/render.py [--frames 120]

Prints wall-clock frames/s (what a collect run sees) and CPU-time frames/s (what the renderer
costs when the machine is shared) per size and condition.
"""
from __future__ import annotations

import argparse
import time

from synthdrive.conditions import Condition, all_conditions
from synthdrive.render import render_frame

SIZES = [(256, 512), (128, 256)]
CONDITIONS = [Condition("clear", "day"), Condition("rain", "dusk"), Condition("fog", "night"),
              Condition("cloudy", "night")]


def measure(condition: Condition | None, height: int, width: int, frames: int) -> tuple[float, float]:
    """(wall fps, CPU fps) over ``frames`` seeds; ``condition`` None cycles all twelve."""
    cycle = all_conditions()
    render_frame(0, cycle[0], height, width)  # warm-up: imports, caches
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(frames):
        render_frame(seed, condition or cycle[seed % len(cycle)], height, width)
    return frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames per row (default 120)")
    args = parser.parse_args()
    print(f"{'size':>9}  {'condition':<13} {'frames/s':>9} {'CPU frames/s':>13}")
    for height, width in SIZES:
        for condition in [*CONDITIONS, None]:
            fps, cpu_fps = measure(condition, height, width, args.frames)
            name = str(condition) if condition else "all 12 mixed"
            print(f"{height:>4}x{width:<4}  {name:<13} {fps:>9.1f} {cpu_fps:>13.1f}")


if __name__ == "__main__":
    main()
