"""Collect frames from the procedural renderer (``collect.source: procedural``, the default).

Train and val conditions are drawn from ``collect.procedural.train_mix`` (imbalanced like a real
fleet); the test split cycles through all twelve conditions so per-condition metrics have equal
support. Every frame's seed is derived from ``collect.seed``, its split and its index, so the
same params give the same bytes and growing one split leaves the others' frames unchanged.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from synthdrive import labels
from synthdrive.conditions import Condition, all_conditions, weighted_mix
from synthdrive.dataset import SPLITS, DatasetWriter
from synthdrive.params import ParamError, Params
from synthdrive.render import option_names, render_frame

DEPTH_SCALE = 1000.0      # depth PNGs hold uint16 millimetres ...
DEPTH_MAX = 65535         # ... saturating at 65.535 m (far scenery and sky)
_SPLIT_STREAM = {split: i for i, split in enumerate(SPLITS)}


def parse_mix(mix) -> tuple[list[Condition], np.ndarray]:
    """Conditions and probabilities of ``train_mix``; a bad entry is a ParamError."""
    weights = weighted_mix(mix, "collect.procedural.train_mix")
    return list(weights), np.array(list(weights.values()))


def render_options(cfg: Params) -> dict:
    """``collect.procedural.render`` (object densities), checked against the renderer's knobs."""
    render = cfg.get("render")
    if render is not None and not isinstance(render, Params):
        raise ParamError("params.yaml: collect.procedural.render must map renderer knobs to values, "
                         f"e.g. {{car_density: 1.0}}; known: {', '.join(option_names())}")
    options = dict(render.items()) if render is not None else {}
    unknown = sorted(set(options) - set(option_names()))
    if unknown:
        raise ParamError(f"params.yaml: collect.procedural.render has unknown key(s) {unknown}; "
                         f"known: {', '.join(option_names())}")
    return options


def frame_seed(seed: int, split: str, index: int) -> int:
    """A per-frame renderer seed from the collect seed, the split and the frame index."""
    return int(np.random.default_rng([seed, _SPLIT_STREAM[split], index]).integers(2**31))


def plan(cfg: Params) -> list[tuple[str, int, Condition, int]]:
    """(split, index, condition, seed) of every frame to render."""
    proc = cfg["procedural"]
    seed = int(cfg["seed"])
    conditions, weights = parse_mix(proc["train_mix"])
    frames = proc["frames"]
    out = []
    for split in SPLITS:
        n = int(frames.get(split, 0) or 0)
        if n < 0:
            raise ParamError(f"params.yaml: collect.procedural.frames.{split}={n}; use a count >= 0")
        if split == "test":
            cycle = all_conditions()
            picks = [cycle[i % len(cycle)] for i in range(n)]
        else:
            draw = np.random.default_rng([seed, _SPLIT_STREAM[split], 2**20]).choice(len(conditions), n, p=weights)
            picks = [conditions[i] for i in draw]
        out += [(split, i, cond, frame_seed(seed, split, i)) for i, cond in enumerate(picks)]
    return out


def collect(cfg: Params, writer: DatasetWriter, label_space: str) -> None:
    height, width = int(cfg["height"]), int(cfg["width"])
    options = render_options(cfg["procedural"])
    table = labels.lookup("procedural", label_space)
    writer.meta.update(depth_unit="mm", depth_max=DEPTH_MAX, render_options=options)
    for split, index, cond, seed in tqdm(plan(cfg), desc="collect procedural", unit="frame"):
        frame = render_frame(seed, cond, height, width, **options)
        depth = np.minimum(np.rint(frame.depth * DEPTH_SCALE), DEPTH_MAX).astype(np.uint16)
        writer.add({"id": f"{split}_{index:06d}", "split": split, "weather": cond.weather,
                    "time_of_day": cond.time_of_day, "source": "procedural", "seed": seed,
                    "instances": frame.instances},
                   frame.image, table[frame.label], depth=depth)
