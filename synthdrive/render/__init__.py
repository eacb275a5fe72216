"""The procedural street-scene renderer: a seeded layout drawn under one of twelve conditions.

``render_frame(seed, condition, height, width, **options)`` returns the RGB image, per-pixel
labels in the ``procedural`` label space, metric depth and the objects drawn. The layout comes
from ``default_rng(seed)`` alone, so one seed is the same street in every condition and size; the
condition's randomness (light strength, fog density, rain, noise) comes from its own stream
``default_rng([seed, condition index])``. Same arguments, same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

import numpy as np

from synthdrive.conditions import Condition, all_conditions
from synthdrive.render.draw import SKY_DEPTH, Canvas, class_ids, draw_scene
from synthdrive.render.effects import make_look, post
from synthdrive.render.scene import RenderOptions, make_scene

GROUND_CLASSES = ("road", "lane_marking", "sidewalk", "curb", "grass")
__all__ = ["Frame", "RenderOptions", "SKY_DEPTH", "render_frame", "option_names"]


@dataclass
class Frame:
    image: np.ndarray        # (H, W, 3) uint8 RGB
    label: np.ndarray        # (H, W) uint8 ids in the 'procedural' label space
    depth: np.ndarray        # (H, W) float32 metres along the view axis; sky = SKY_DEPTH
    instances: dict          # class name -> number of objects drawn (at least one pixel)


@cache
def _ground_lut() -> np.ndarray:
    lut = np.zeros(256, np.float32)
    lut[[class_ids()[name] for name in GROUND_CLASSES]] = 1.0
    return lut


def option_names() -> list[str]:
    return [f.name for f in fields(RenderOptions)]


def render_frame(seed: int, condition: Condition, height: int, width: int, **options) -> Frame:
    """Render one labelled frame; ``options`` are RenderOptions fields (object densities)."""
    unknown = set(options) - set(option_names())
    if unknown:
        raise TypeError(f"unknown render option(s) {sorted(unknown)}; known: {option_names()}")
    condition = Condition(*condition)
    scene = make_scene(np.random.default_rng(seed), RenderOptions(**options))
    cond_rng = np.random.default_rng([seed, all_conditions().index(condition)])
    look = make_look(condition, cond_rng)
    canvas = Canvas(scene, look, height, width, cond_rng)
    instances = draw_scene(canvas, scene, cond_rng)
    ids = class_ids()
    if look.stars:
        n = max(1, height * width // 400)
        u = cond_rng.integers(0, width, n)
        v = cond_rng.integers(0, max(int(canvas.cy), 1), n)
        on_sky = canvas.label[v, u] == ids["sky"]
        canvas.image[v[on_sky], u[on_sky]] = cond_rng.integers(120, 230, (int(on_sky.sum()), 1))
    image = post(canvas.image, canvas.label, canvas.depth, look, canvas.glows, canvas.pools, canvas.cy,
                 (ids["road"], ids["lane_marking"]), _ground_lut(), cond_rng)
    return Frame(image, canvas.label, canvas.depth, dict(sorted(instances.items())))
