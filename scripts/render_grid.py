"""One street in all twelve conditions, as a small PNG grid (docs/render_conditions.png).

    .venv/bin/python scripts/render_grid.py [--seed 33] [--size 160x320] [--out docs/render_conditions.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from synthdrive import labels, viz
from synthdrive.conditions import all_conditions
from synthdrive.render import render_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=33)
    parser.add_argument("--size", default="160x320", help="HxW of each tile")
    parser.add_argument("--out", default="docs/render_conditions.png")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    tiles, captions = [], []
    for condition in all_conditions():   # rows: clear, cloudy, rain, fog; columns: day, dusk, night
        frame = render_frame(args.seed, condition, height, width)
        tiles.append(frame.image)
        captions.append(str(condition))
    tiles.append(labels.colorize(frame.label, "procedural"))   # the layout is the same in every condition
    captions.append(f"labels (seed {args.seed})")
    # a 256-colour palette keeps the PNG small enough for the README (sensor noise compresses badly)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(viz.grid(tiles, captions, cols=3))
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
