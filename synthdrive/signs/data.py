"""Synthetic sign datasets on disk: ``<out>/{train,val,shifted}/{stop,warning}/*.png``.

The class-per-folder layout is the one of real test sets (../shared/data/gtsrb_dev), so one
reader serves both. ``shifted`` is a procedural test set in a held-out style (render.py), the
fallback test when no real photos are configured. ``index.jsonl`` records, per image, its
file, split, label, condition, background and backend; ``meta.json`` the settings used.

Backends (``signs.data.backend``):
- ``procedural``: render.py on backgrounds cut from procedural street scenes
  (``synthdrive.render.render_frame``) and synthetic clutter;
- ``diffusers``: a local text-to-image pipeline (diffusion.py) prompted per class.
Crops around sign pixels in generated scenes (the synthesis stage's output) are not a backend yet.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthdrive.conditions import Condition, weighted_mix
from synthdrive.dataset import atomic_dir, write_json, write_jsonl, write_png
from synthdrive.params import ParamError, Params
from synthdrive.signs import CLASSES
from synthdrive.signs.render import render_sign

BACKENDS = ("procedural", "diffusers")
SPLITS = ("train", "val", "shifted")


def condition_mix(cfg: Params) -> tuple[list[Condition], np.ndarray]:
    """The ``conditions`` param ({"rain-night": weight, ...}) as conditions and probabilities."""
    weights = weighted_mix(cfg["conditions"].to_dict(), "signs.data.conditions")
    return list(weights), np.array(list(weights.values()))


def street_backgrounds(conditions: list[Condition], per_condition: int, height: int, width: int,
                       seed: int) -> dict[Condition, list[np.ndarray]] | None:
    """Procedural street scenes to cut backgrounds from, per condition; None without the renderer."""
    try:
        from synthdrive.render import render_frame
    except ImportError:
        return None
    pool = {}
    for ci, cond in enumerate(conditions):
        pool[cond] = [render_frame(seed=int(1_000_000 + seed * 1000 + ci * 100 + k), condition=cond,
                                   height=height, width=width).image for k in range(per_condition)]
    return pool


def _street_crop(frames: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random square patch of a street scene, the size a sign crop covers."""
    frame = frames[rng.integers(len(frames))]
    h, w = frame.shape[:2]
    side = int(rng.uniform(0.12, 0.45) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return frame[y:y + side, x:x + side]


def procedural_images(cfg: Params, split: str, kind: str, count: int, pool) -> list[tuple[np.ndarray, dict]]:
    """``count`` crops of class ``kind``; each depends only on (seed, split, class, index)."""
    conds, probs = condition_mix(cfg)
    street_fraction = float(cfg["backgrounds.street_fraction"]) if pool else 0.0
    out = []
    for i in tqdm(range(count), desc=f"signs {split}/{kind}", leave=False, mininterval=5):
        seq = np.random.SeedSequence([int(cfg["seed"]), SPLITS.index(split), CLASSES.index(kind), i])
        choice_seed, render_seed = seq.spawn(2)
        rng = np.random.default_rng(choice_seed)
        cond = conds[rng.choice(len(conds), p=probs)]
        background = None
        if rng.random() < street_fraction:
            background = _street_crop(pool[cond], rng)
        image = render_sign(kind, render_seed, cond, size=int(cfg["size"]), render_size=int(cfg["render_size"]),
                            background=background, style="shifted" if split == "shifted" else "train")
        out.append((image, {"condition": str(cond), "background": "street" if background is not None
                            else "synthetic", "style": "shifted" if split == "shifted" else "train"}))
    return out


def make_sign_data(cfg: Params, out: str | Path) -> dict:
    """Write the train/val/shifted sign sets to ``out`` atomically; return per-split counts."""
    backend = cfg.choice("backend", BACKENDS)
    counts = {split: int(cfg[f"counts.{split}"]) for split in SPLITS}
    if any(n < 1 for n in counts.values()):
        raise ParamError(f"params.yaml: signs.data.counts must be >= 1 per class, got {counts}")
    conds, _ = condition_mix(cfg)
    generator = None
    if backend == "diffusers":  # first: a bad model_dir fails before any rendering
        from synthdrive.signs.diffusion import DiffusersSigns

        generator = DiffusersSigns(cfg["diffusers"], size=int(cfg["size"]), seed=int(cfg["seed"]))
    pool = None
    if float(cfg["backgrounds.street_fraction"]) > 0:
        pool = street_backgrounds(conds, int(cfg["backgrounds.frames_per_condition"]),
                                  int(cfg["backgrounds.height"]), int(cfg["backgrounds.width"]), int(cfg["seed"]))
        if pool is None:
            warnings.warn("synthdrive.render is not available: sign backgrounds are all synthetic")
    records = []
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            for kind in CLASSES:
                folder = tmp / split / kind
                folder.mkdir(parents=True)
                if generator is not None and split != "shifted":
                    items = generator.images(kind, counts[split], split)
                else:  # the shifted test set stays procedural: it is the held-out style
                    items = procedural_images(cfg, split, kind, counts[split], pool)
                for i, (image, info) in enumerate(items):
                    name = f"{split}_{kind}_{i:05d}.png"
                    write_png(folder / name, image)
                    records.append({"file": f"{split}/{kind}/{name}", "split": split, "label": kind,
                                    "backend": "procedural" if split == "shifted" else backend, **info})
        write_jsonl(tmp / "index.jsonl", records)
        write_json(tmp / "meta.json", {"backend": backend, "classes": list(CLASSES), "counts_per_class": counts,
                                       "size": int(cfg["size"]), "street_backgrounds": pool is not None})
    return counts
