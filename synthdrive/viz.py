"""Pictures people look at: colourised labels and side-by-side sample grids (PNG)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from synthdrive import labels
from synthdrive.conditions import condition_key


def side_by_side(image: np.ndarray, label: np.ndarray, space: str) -> np.ndarray:
    """The image and its colourised label next to each other."""
    return np.concatenate([image, labels.colorize(label, space)], axis=1)


def grid(tiles: Sequence[np.ndarray], captions: Sequence[str] | None = None, cols: int = 4,
         pad: int = 2) -> np.ndarray:
    """Tile same-sized RGB arrays into one image, each with an optional caption strip."""
    if not tiles:
        raise ValueError("grid needs at least one tile")
    cols = min(cols, len(tiles))
    h, w = tiles[0].shape[:2]
    text_h = 12 if captions else 0
    rows = -(-len(tiles) // cols)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        x = pad + (i % cols) * (w + pad)
        y = pad + (i // cols) * (h + text_h + pad)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile[..., :3])), (x, y + text_h))
        if captions:
            draw.text((x + 2, y), captions[i], fill="black")
    return np.asarray(canvas)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def dataset_grid(dataset, path: str | os.PathLike, per_condition: int = 1, cols: int = 3,
                 split: str | None = None) -> Path:
    """A grid of image|label pairs, ``per_condition`` frames of each condition present."""
    seen: dict[str, int] = {}
    tiles, captions = [], []
    records = dataset.split(split) if split else dataset.records
    for r in sorted(records, key=lambda r: (r.get("weather", ""), r.get("time_of_day", ""), r["id"])):
        cond = condition_key(r, missing="?")
        if seen.get(cond, 0) >= per_condition:
            continue
        seen[cond] = seen.get(cond, 0) + 1
        tiles.append(side_by_side(dataset.image(r["id"]), dataset.label(r["id"]),
                                  dataset.label_space.name))
        captions.append(f"{r['id']}  {cond}")
    return save_png(grid(tiles, captions, cols=cols), path)
