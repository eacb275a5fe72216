"""The ``real_aug`` control: real frames shifted toward a target condition's appearance.

The pilot (shared/notes/pilot-dusk.md) found that most of what its GAN learned was a global
colour shift. This module makes exactly that shift without a generator, so a generator has to
beat it: Reinhard colour transfer in Lab space to the mean/std of real frames of the target
condition, then the local structure global statistics cannot express (rain streaks; a fog
overlay when no real frame of the target condition exists to copy statistics from).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import cv2
import numpy as np

from synthdrive.conditions import Condition, condition_key

# When no real frame of a target condition exists, its appearance comes from these presets:
# (L scale, a shift, b shift) per time of day and a fog density per weather, in OpenCV's 8-bit
# Lab units. Rough values from the procedural renderer's dusk/night frames; statistics from real
# frames always take precedence.
TIME_PRESETS = {"day": (1.0, 0.0, 0.0), "dusk": (0.6, 6.0, 14.0), "night": (0.3, 0.0, -8.0)}
FOG_DENSITY = {"clear": 0.0, "cloudy": 0.0, "rain": 0.15, "fog": 0.55}


def _lab(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def lab_stats(images: Iterable[np.ndarray]) -> dict:
    """Mean and std per Lab channel over all pixels of ``images`` (RGB uint8)."""
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for image in images:
        lab = _lab(image).reshape(-1, 3).astype(np.float64)
        total += lab.sum(0)
        total_sq += (lab ** 2).sum(0)
        count += len(lab)
    if count == 0:
        raise ValueError("lab_stats needs at least one image")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-6))
    return {"mean": mean.round(3).tolist(), "std": std.round(3).tolist()}


def condition_stats(dataset, records: list[dict]) -> dict[str, dict]:
    """{condition: Lab stats} from the real frames of each condition in ``records``."""
    by_condition: dict[str, list[str]] = {}
    for r in records:
        by_condition.setdefault(condition_key(r), []).append(r["id"])
    return {cond: lab_stats(dataset.image(i) for i in ids) for cond, ids in sorted(by_condition.items())}


def color_transfer(image_rgb: np.ndarray, target: Mapping) -> np.ndarray:
    """Reinhard transfer: match each Lab channel's mean/std to ``target``."""
    lab = _lab(image_rgb)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-3
    lab = (lab - mean) / std * np.asarray(target["std"], np.float32) + np.asarray(target["mean"], np.float32)
    return _rgb(lab)


def preset_shift(image_rgb: np.ndarray, time_of_day: str) -> np.ndarray:
    scale, da, db = TIME_PRESETS[time_of_day]
    lab = _lab(image_rgb)
    lab[..., 0] *= scale
    lab[..., 1] += da
    lab[..., 2] += db
    return _rgb(lab)


def fog_overlay(image_rgb: np.ndarray, density: float) -> np.ndarray:
    """Blend toward grey airlight, densest at the horizon (upper middle), thinner at the bottom."""
    h = image_rgb.shape[0]
    rows = np.linspace(1.0, 0.4, h, dtype=np.float32)[:, None, None]
    alpha = np.clip(density * rows, 0, 0.95)
    airlight = np.float32(200.0)
    return (image_rgb.astype(np.float32) * (1 - alpha) + airlight * alpha).astype(np.uint8)


def rain_streaks(image_rgb: np.ndarray, rng: np.random.Generator, density: float = 0.004) -> np.ndarray:
    """Thin bright slanted streaks, motion-blurred, added to the image."""
    h, w = image_rgb.shape[:2]
    layer = np.zeros((h, w), np.float32)
    n = max(1, int(density * h * w))
    length = max(4, h // 12)
    angle = rng.uniform(-0.35, 0.35)
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    dx, dy = int(round(length * np.sin(angle))), int(round(length * np.cos(angle)))
    for x, y in zip(xs.tolist(), ys.tolist()):
        cv2.line(layer, (x, y), (x + dx, y + dy), float(rng.uniform(0.3, 0.8)), 1)
    layer = cv2.GaussianBlur(layer, (3, 3), 0)
    return np.clip(image_rgb.astype(np.float32) * 0.9 + 140.0 * layer[..., None], 0, 255).astype(np.uint8)


def shift_to_condition(image_rgb: np.ndarray, target: Condition, stats: Mapping[str, Mapping],
                       rng: np.random.Generator) -> np.ndarray:
    """``image_rgb`` made to look like ``target`` (see the module docstring)."""
    key = str(target)
    if key in stats:
        out = color_transfer(image_rgb, stats[key])
    else:
        out = preset_shift(image_rgb, target.time_of_day)
        out = fog_overlay(out, FOG_DENSITY[target.weather]) if FOG_DENSITY[target.weather] else out
    if target.weather == "rain":
        out = rain_streaks(out, rng)
    return out
