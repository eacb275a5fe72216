"""Procedural traffic-sign crops: red STOP octagons and red-bordered warning triangles.

A crop looks like a GTSRB crop: the sign fills most of a small square, on a background, seen
through one driving condition. Everything a real photo varies is randomised so a classifier
trained on these keys on shape and colour layout, not on one rendering: sign colours and
border widths, fonts, ~16 pictograms (mirrored), rotation, perspective, scale and offset,
partial occlusion, lighting per condition (day, cloudy, dusk, night with retroreflection and
headlight glare, fog, rain), motion/defocus blur, sensor noise and JPEG artefacts.

``style="shifted"`` renders a held-out look for a procedural test set when no real photos are
at hand: fonts and pictograms (random glyphs and shapes) never used in training, other colour
ranges and harsher degradations. It is a sanity check of generalisation, not a real-photo test.

Drawing is OpenCV on a supersampled canvas (anti-aliased edges after INTER_AREA downscaling);
each crop depends only on its own seed, so datasets are deterministic and order-independent.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from synthdrive.conditions import Condition
from synthdrive.signs import CLASSES

SUPERSAMPLE = 4
TRAIN_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX)
SHIFTED_FONTS = (cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SIMPLEX | cv2.FONT_ITALIC)


# --- pictograms: black symbols inside warning triangles, drawn in a box of half-size s ------

def _line(img, p, q, t, c):
    cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), c, max(1, int(t)), cv2.LINE_AA)


def _poly(img, pts, t, c, closed=False):
    cv2.polylines(img, [np.int32(pts)], closed, c, max(1, int(t)), cv2.LINE_AA)


def _disc(img, p, r, c):
    cv2.circle(img, (int(p[0]), int(p[1])), max(1, int(r)), c, -1, cv2.LINE_AA)


def _exclamation(img, x, y, s, rng, c):
    _line(img, (x, y - 0.8 * s), (x, y + 0.35 * s), 0.28 * s, c)
    _disc(img, (x, y + 0.72 * s), 0.17 * s, c)


def _curve(img, x, y, s, rng, c):
    pts = [(x + 0.2 * s, y + 0.9 * s), (x + 0.2 * s, y), (x - 0.1 * s, y - 0.4 * s),
           (x - 0.1 * s, y - 0.6 * s)]
    _poly(img, pts, 0.2 * s, c)
    head = np.array([(x - 0.45 * s, y - 0.45 * s), (x - 0.1 * s, y - 0.95 * s), (x + 0.25 * s, y - 0.45 * s)])
    cv2.fillPoly(img, [np.int32(head)], c, cv2.LINE_AA)


def _double_curve(img, x, y, s, rng, c):
    t = np.linspace(0, 1, 20)
    pts = np.stack([x + 0.35 * s * np.sin(t * 2 * np.pi), y + s * (0.9 - 1.6 * t)], 1)
    _poly(img, pts, 0.2 * s, c)
    _line(img, pts[-1], pts[-1] + (-0.25 * s, 0.2 * s), 0.2 * s, c)
    _line(img, pts[-1], pts[-1] + (0.25 * s, 0.2 * s), 0.2 * s, c)


def _person(img, x, y, s, rng, c, scale=1.0):
    s = s * scale
    _disc(img, (x, y - 0.7 * s), 0.16 * s, c)
    _line(img, (x, y - 0.5 * s), (x - 0.05 * s, y + 0.2 * s), 0.2 * s, c)
    _line(img, (x - 0.05 * s, y + 0.2 * s), (x - 0.35 * s, y + 0.85 * s), 0.16 * s, c)
    _line(img, (x - 0.05 * s, y + 0.2 * s), (x + 0.3 * s, y + 0.85 * s), 0.16 * s, c)
    _line(img, (x, y - 0.35 * s), (x - 0.35 * s, y + 0.05 * s), 0.13 * s, c)
    _line(img, (x, y - 0.35 * s), (x + 0.35 * s, y - 0.05 * s), 0.13 * s, c)


def _children(img, x, y, s, rng, c):
    _person(img, x - 0.3 * s, y, s, rng, c, 0.85)
    _person(img, x + 0.35 * s, y + 0.2 * s, s, rng, c, 0.65)


def _bumps(img, x, y, s, rng, c):
    for dx in (-0.45, 0.45):
        cv2.ellipse(img, (int(x + dx * s), int(y + 0.6 * s)), (int(0.42 * s), int(0.45 * s)), 0,
                    180, 360, c, -1, cv2.LINE_AA)
    _line(img, (x - 0.95 * s, y + 0.62 * s), (x + 0.95 * s, y + 0.62 * s), 0.15 * s, c)


def _slippery(img, x, y, s, rng, c):
    cv2.rectangle(img, (int(x - 0.45 * s), int(y - 0.5 * s)), (int(x + 0.45 * s), int(y - 0.05 * s)), c, -1)
    _disc(img, (x - 0.3 * s, y), 0.12 * s, c)
    _disc(img, (x + 0.3 * s, y), 0.12 * s, c)
    for dx in (-0.35, 0.35):
        t = np.linspace(0, 1, 12)
        pts = np.stack([x + dx * s + 0.15 * s * np.sin(t * 3 * np.pi), y + 0.2 * s + 0.7 * s * t], 1)
        _poly(img, pts, 0.1 * s, c)


def _deer(img, x, y, s, rng, c):
    cv2.ellipse(img, (int(x), int(y + 0.1 * s)), (int(0.5 * s), int(0.2 * s)), -15, 0, 360, c, -1, cv2.LINE_AA)
    for dx, dy in ((-0.35, 0.25), (-0.15, 0.25), (0.25, 0.1), (0.4, 0.05)):
        _line(img, (x + dx * s, y + dy * s), (x + (dx - 0.1) * s, y + 0.85 * s), 0.09 * s, c)
    _line(img, (x + 0.4 * s, y - 0.05 * s), (x + 0.6 * s, y - 0.5 * s), 0.14 * s, c)
    _line(img, (x + 0.6 * s, y - 0.5 * s), (x + 0.45 * s, y - 0.9 * s), 0.07 * s, c)
    _line(img, (x + 0.6 * s, y - 0.5 * s), (x + 0.85 * s, y - 0.85 * s), 0.07 * s, c)


def _traffic_lights(img, x, y, s, rng, c):
    cv2.rectangle(img, (int(x - 0.3 * s), int(y - 0.9 * s)), (int(x + 0.3 * s), int(y + 0.9 * s)), c, -1)
    for dy, colour in ((-0.55, (220, 30, 30)), (0.0, (240, 200, 30)), (0.55, (40, 170, 60))):
        _disc(img, (x, y + dy * s), 0.2 * s, colour)


def _narrows(img, x, y, s, rng, c):
    _poly(img, [(x - 0.6 * s, y + 0.9 * s), (x - 0.6 * s, y + 0.1 * s), (x - 0.25 * s, y - 0.3 * s),
                (x - 0.25 * s, y - 0.9 * s)], 0.15 * s, c)
    _poly(img, [(x + 0.6 * s, y + 0.9 * s), (x + 0.6 * s, y + 0.1 * s), (x + 0.25 * s, y - 0.3 * s),
                (x + 0.25 * s, y - 0.9 * s)], 0.15 * s, c)


def _roadworks(img, x, y, s, rng, c):
    _person(img, x - 0.15 * s, y - 0.05 * s, s, rng, c, 0.85)
    _line(img, (x + 0.2 * s, y - 0.1 * s), (x + 0.55 * s, y + 0.6 * s), 0.1 * s, c)
    cv2.fillPoly(img, [np.int32([(x + 0.3 * s, y + 0.9 * s), (x + 0.95 * s, y + 0.9 * s),
                                 (x + 0.7 * s, y + 0.45 * s)])], c, cv2.LINE_AA)


def _bicycle(img, x, y, s, rng, c):
    for dx in (-0.5, 0.5):
        cv2.circle(img, (int(x + dx * s), int(y + 0.4 * s)), int(0.35 * s), c, max(1, int(0.1 * s)), cv2.LINE_AA)
    _poly(img, [(x - 0.5 * s, y + 0.4 * s), (x - 0.1 * s, y - 0.2 * s), (x + 0.35 * s, y - 0.2 * s),
                (x + 0.5 * s, y + 0.4 * s)], 0.1 * s, c)
    _line(img, (x - 0.1 * s, y - 0.2 * s), (x, y + 0.4 * s), 0.1 * s, c)


def _snowflake(img, x, y, s, rng, c):
    for a in (0, 60, 120):
        dx, dy = 0.85 * s * math.cos(math.radians(a)), 0.85 * s * math.sin(math.radians(a))
        _line(img, (x - dx, y - dy), (x + dx, y + dy), 0.12 * s, c)


def _intersection(img, x, y, s, rng, c):
    _line(img, (x, y - 0.9 * s), (x, y + 0.9 * s), 0.35 * s, c)
    _line(img, (x - 0.7 * s, y - 0.1 * s), (x + 0.7 * s, y - 0.1 * s), 0.14 * s, c)


def _rocks(img, x, y, s, rng, c):
    cv2.fillPoly(img, [np.int32([(x - 0.9 * s, y + 0.9 * s), (x - 0.9 * s, y - 0.8 * s),
                                 (x - 0.5 * s, y + 0.9 * s)])], c, cv2.LINE_AA)
    for _ in range(4):
        _disc(img, (x + rng.uniform(-0.3, 0.7) * s, y + rng.uniform(-0.6, 0.7) * s), rng.uniform(0.1, 0.2) * s, c)


def _random_strokes(img, x, y, s, rng, c):
    """A made-up pictogram: the classifier must not depend on knowing every symbol."""
    for _ in range(rng.integers(1, 4)):
        pts = np.stack([x + rng.uniform(-0.8, 0.8, 3) * s, y + rng.uniform(-0.8, 0.9, 3) * s], 1)
        if rng.random() < 0.5:
            _poly(img, pts, rng.uniform(0.1, 0.25) * s, c)
        else:
            _disc(img, pts[0], rng.uniform(0.12, 0.3) * s, c)


def _glyph(img, x, y, s, rng, c):
    """Held-out pictograms for the shifted set: a letter/digit or a random filled polygon."""
    if rng.random() < 0.5:
        text = chr(rng.choice([*range(65, 91), *range(48, 58)]))
        font = cv2.FONT_HERSHEY_PLAIN
        scale = cv2.getFontScaleFromHeight(font, int(1.4 * s), max(1, int(0.2 * s)))
        (w, h), _ = cv2.getTextSize(text, font, scale, max(1, int(0.2 * s)))
        cv2.putText(img, text, (int(x - w / 2), int(y + h / 2)), font, scale, c, max(1, int(0.2 * s)), cv2.LINE_AA)
    else:
        n = rng.integers(3, 7)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.4, 0.9, n) * s
        cv2.fillPoly(img, [np.int32(np.stack([x + rad * np.cos(ang), y + rad * np.sin(ang)], 1))], c, cv2.LINE_AA)


TRAIN_PICTOGRAMS: tuple[Callable, ...] = (
    _exclamation, _curve, _double_curve, _person, _children, _bumps, _slippery, _deer,
    _traffic_lights, _narrows, _roadworks, _bicycle, _snowflake, _intersection, _rocks, _random_strokes)
SHIFTED_PICTOGRAMS: tuple[Callable, ...] = (_glyph,)


# --- the sign itself on a square supersampled canvas: RGB layer + alpha --------------------

def _regular_polygon(cx, cy, r, n, start_deg):
    a = np.radians(start_deg + 360.0 * np.arange(n) / n)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _fill_rounded(img, pts, colour, rounding):
    """Fill a polygon with rounded corners: a shrunk polygon stroked with round line joins."""
    centre = pts.mean(0)
    inner = centre + (pts - centre) * (1 - rounding)
    thick = max(1, int(2 * np.linalg.norm(pts[0] - centre) * rounding))
    cv2.fillPoly(img, [np.int32(inner)], colour, cv2.LINE_AA)
    cv2.polylines(img, [np.int32(inner)], True, colour, thick, cv2.LINE_AA)


def _jitter_colour(rng, base, spread):
    return tuple(int(np.clip(v + rng.uniform(-spread, spread), 0, 255)) for v in base)


def draw_sign(kind: str, canvas: int, rng: np.random.Generator, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """The sign centred on a ``canvas``-pixel square: (RGB uint8, alpha float32 in [0,1])."""
    img = np.zeros((canvas, canvas, 3), np.uint8)
    alpha = np.zeros((canvas, canvas), np.uint8)
    c = canvas / 2
    r = 0.48 * canvas
    rounding = rng.uniform(0.02, 0.1)
    white = _jitter_colour(rng, (225, 225, 222), 30)  # clean to weathered
    red = _jitter_colour(rng, (150, 10, 30) if shifted else (200, 25, 35), 35)
    if kind == "stop":
        outer = _regular_polygon(c, c, r, 8, 22.5)
        _fill_rounded(img, outer, white, rounding)
        _fill_rounded(alpha, outer, 255, rounding)
        rim = rng.uniform(0.1, 0.16) if shifted else rng.uniform(0.03, 0.1)
        _fill_rounded(img, _regular_polygon(c, c, r * (1 - rim), 8, 22.5), red, rounding)
        font = rng.choice(SHIFTED_FONTS if shifted else TRAIN_FONTS)
        thick = max(1, int(canvas * rng.uniform(0.025, 0.05)))
        (w, h), _ = cv2.getTextSize("STOP", font, 1.0, thick)
        scale = rng.uniform(1.05, 1.35) * r / w
        (w, h), _ = cv2.getTextSize("STOP", font, scale, thick)
        text_white = _jitter_colour(rng, white, 10)
        cv2.putText(img, "STOP", (int(c - w / 2), int(c + h / 2)), font, scale, text_white, thick, cv2.LINE_AA)
    elif kind == "warning":
        inverted_yellow = rng.random() < (0.5 if shifted else 0.2)
        inner_colour = _jitter_colour(rng, (240, 200, 40) if inverted_yellow else white, 20)
        centre_y = c + 0.14 * r  # an upright triangle's centroid sits below the canvas centre
        outer = _regular_polygon(c, centre_y, r * 1.12, 3, -90)
        rim = rng.uniform(0.0, 0.06)
        _fill_rounded(img, outer, white, rounding)
        _fill_rounded(alpha, outer, 255, rounding)
        border = rng.uniform(0.2, 0.3) if shifted else rng.uniform(0.1, 0.24)
        _fill_rounded(img, _regular_polygon(c, centre_y, r * 1.12 * (1 - rim), 3, -90), red, rounding)
        _fill_rounded(img, _regular_polygon(c, centre_y, r * 1.12 * (1 - rim - 2 * border), 3, -90),
                      inner_colour, rounding / 2)
        pictogram = rng.choice(np.array(SHIFTED_PICTOGRAMS if shifted else TRAIN_PICTOGRAMS, dtype=object))
        s = r * (1 - rim - 2 * border) * rng.uniform(0.45, 0.65)
        layer = np.zeros_like(img)
        black = tuple(int(v) for v in rng.integers(10, 60, 3))
        pictogram(layer, c, centre_y + 0.12 * r, s, rng, black)
        if rng.random() < 0.5:  # curves, walkers, animals come in both directions
            layer = np.ascontiguousarray(layer[:, ::-1])
        mask = layer.any(-1)
        img[mask] = layer[mask]
    else:
        raise ValueError(f"unknown sign class {kind!r}; choose one of {CLASSES}")
    return img, alpha.astype(np.float32) / 255.0


# --- backgrounds, geometry, occlusion ----------------------------------------------------

def synthetic_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible clutter behind a sign: sky/foliage/wall colours, gradients, noise, blurred shapes."""
    palette = np.array([(120, 160, 210), (90, 120, 70), (60, 80, 50), (140, 140, 140), (200, 200, 205),
                        (110, 90, 70), (40, 40, 45), (170, 150, 120), (60, 90, 140), (230, 230, 230)], np.float32)
    a, b = palette[rng.integers(len(palette), size=2)] + rng.uniform(-30, 30, (2, 3))
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    if kind == 0:
        bg = np.broadcast_to(a, (size, size, 3)).copy()
    elif kind == 1:
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * xx + np.sin(ang) * yy)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        bg = a * (1 - t[..., None]) + b * t[..., None]
    else:
        cells = rng.integers(2, 9)
        low = rng.uniform(0, 1, (cells, cells, 1)).astype(np.float32)
        t = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)[..., None]
        bg = a * (1 - t) + b * t
    bg = bg.astype(np.float32)
    for _ in range(rng.integers(0, 5)):  # poles, other signs, leaves, building edges
        colour = palette[rng.integers(len(palette))].tolist() + rng.uniform(-25, 25, 3)
        colour = tuple(float(v) for v in np.clip(colour, 0, 255))
        if rng.random() < 0.5:
            p = rng.integers(0, size, 2)
            q = p + rng.integers(-size // 2, size // 2, 2)
            cv2.rectangle(bg, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, -1)
        else:
            cv2.circle(bg, tuple(int(v) for v in rng.integers(0, size, 2)), int(rng.integers(2, size // 2)), colour, -1)
    if rng.random() < 0.15:  # the edge of a neighbouring sign (red ring or blue disc) at a border
        centre = (int(rng.uniform(0, size)), int(size * rng.choice([-0.3, 1.3])))
        radius = int(size * rng.uniform(0.4, 0.6))
        if rng.random() < 0.5:
            cv2.circle(bg, centre, radius, (240.0, 240.0, 240.0), -1)
            cv2.circle(bg, centre, radius, (200.0, 30.0, 40.0), max(1, size // 10))
        else:
            cv2.circle(bg, centre, radius, (30.0, 70.0, 170.0), -1)
    bg += rng.normal(0, rng.uniform(0, 12), bg.shape)
    bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(0.5, 2.5))
    return np.clip(bg, 0, 255).astype(np.uint8)


def _place(layer, alpha, size, rng, fill) -> tuple[np.ndarray, np.ndarray]:
    """Warp the sign into a ``size`` square: scale so it fills ``fill`` of it, rotate, offset, tilt."""
    canvas = layer.shape[0]
    big = size * SUPERSAMPLE
    src = np.float32([[0, 0], [canvas, 0], [canvas, canvas], [0, canvas]])
    centre = big / 2 + rng.uniform(-0.08, 0.08, 2) * big
    half = fill * big / 2
    ang = np.radians(rng.uniform(-12, 12))
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
    # off-axis view: the sign looks narrower and its far edge shorter
    squeeze = rng.uniform(0.0, 0.35)
    corners[:, 0] *= 1 - squeeze / 2
    far = corners[:, 0] * rng.choice([-1, 1]) > 0
    corners[far, 1] *= 1 - squeeze / 3
    corners = corners @ rot.T + centre + rng.normal(0, 0.02 * big, (4, 2))
    m = cv2.getPerspectiveTransform(src, np.float32(corners))
    warped = cv2.warpPerspective(layer, m, (big, big), flags=cv2.INTER_LINEAR)
    walpha = cv2.warpPerspective(alpha, m, (big, big), flags=cv2.INTER_LINEAR)
    warped = cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)
    walpha = cv2.resize(walpha, (size, size), interpolation=cv2.INTER_AREA)
    return warped.astype(np.float32), walpha


def _occlude(img, rng):
    """A branch, leaf cluster or pole in front of part of the sign."""
    size = img.shape[0]
    colour = tuple(float(v) for v in (rng.choice([(40, 70, 30), (80, 60, 40), (120, 120, 120), (30, 30, 30)])
                                      + rng.uniform(-20, 20, 3)))
    if rng.random() < 0.5:
        edge = rng.integers(4)
        depth = rng.uniform(0.08, 0.25) * size
        pts = {0: [(0, 0), (size, 0), (size, depth), (0, depth * rng.uniform(0.5, 1.5))],
               1: [(0, size), (size, size), (size, size - depth), (0, size - depth * rng.uniform(0.5, 1.5))],
               2: [(0, 0), (depth, 0), (depth * rng.uniform(0.5, 1.5), size), (0, size)],
               3: [(size, 0), (size - depth, 0), (size - depth * rng.uniform(0.5, 1.5), size), (size, size)]}[edge]
        cv2.fillPoly(img, [np.int32(pts)], colour, cv2.LINE_AA)
    else:
        p = rng.uniform(0, size, 2)
        q = p + rng.uniform(-size, size, 2)
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour,
                 max(1, int(rng.uniform(0.04, 0.1) * size)), cv2.LINE_AA)


# --- light and camera ------------------------------------------------------------------

def _light(img, alpha, condition: Condition, rng, shifted, background_lit):
    """Illumination of the scene and the sign by time of day, then weather on top; float [0,255].

    A ``background_lit`` background (a street scene rendered in this condition) already carries
    the condition's light and haze: only the sign gets them here.
    """
    tod, weather = condition.time_of_day, condition.weather
    tint = np.ones(3, np.float32)
    if tod == "day":
        gain = rng.uniform(0.3, 1.35) if rng.random() > 0.15 else rng.uniform(1.4, 2.0)  # under/overexposed
        tint = np.array([1, 1, 1]) + rng.uniform(-0.08, 0.08, 3)
        sign_gain = gain
    elif tod == "dusk":
        gain = rng.uniform(0.2, 0.6)
        tint = np.array([1.15, 0.95, 0.75]) + rng.uniform(-0.08, 0.08, 3)
        sign_gain = gain * rng.uniform(1.0, 1.6)
    else:  # night: dark scene; retroreflective sign lit by headlights, often still dim
        gain = rng.uniform(0.06, 0.25)
        tint = np.array([1.1, 1.0, 0.8]) + rng.uniform(-0.1, 0.1, 3)
        sign_gain = gain * rng.uniform(1.0, 3.0)
    if weather == "cloudy":
        gain *= 0.8
        sign_gain *= 0.8
        tint = tint * np.array([0.95, 1.0, 1.08])
    if shifted:
        gain *= rng.uniform(0.6, 1.2)
        tint = tint + rng.uniform(-0.15, 0.15, 3)
    a = alpha[..., None]
    out = img * (a * sign_gain * tint + (1 - a) * (1.0 if background_lit else gain * tint))
    gamma = rng.uniform(0.8, 1.25)
    out = 255.0 * np.clip(out / 255.0, 0, 1) ** gamma
    size = img.shape[0]
    if tod == "night" and rng.random() < 0.4:  # headlight glare / street lamp bloom
        p = rng.uniform(0, size, 2)
        yy, xx = np.mgrid[0:size, 0:size]
        spot = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * (rng.uniform(0.1, 0.4) * size) ** 2))
        out += spot[..., None] * rng.uniform(60, 200) * np.array([1.0, 0.95, 0.8])
    if weather == "fog":
        haze = rng.uniform(0.3, 0.7)
        grey = rng.uniform(110, 200) * (gain if tod != "day" else 1.0)
        haze = haze * a if background_lit else haze
        out = out * (1 - haze) + grey * haze
    if weather == "rain":
        out *= rng.uniform(0.7, 0.95)
        streaks = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(5, 20)):
            p = rng.uniform(0, size, 2)
            q = p + np.array([rng.uniform(-2, 2), rng.uniform(4, 12)])
            cv2.line(streaks, tuple(int(v) for v in p), tuple(int(v) for v in q), 1.0, 1, cv2.LINE_AA)
        out += streaks[..., None] * rng.uniform(20, 60)
    return np.clip(out, 0, 255)


def _camera(img, condition: Condition, rng, shifted):
    """Motion or defocus blur, sensor noise (more in the dark), JPEG; uint8."""
    size = img.shape[0]
    harsh = 1.5 if shifted else 1.0
    if rng.random() < 0.4:
        length = int(rng.integers(2, max(3, size // 10)) * harsh)
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif rng.random() < 0.5 or condition.weather == "rain":
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.8) * harsh)
    dark = condition.time_of_day != "day"
    noise = rng.uniform(1, 10 if dark else 6) * harsh
    img = img + rng.normal(0, noise, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        quality = int(rng.integers(15 if shifted else 30, 95))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return img


def render_sign(kind: str, seed, condition: Condition, size: int = 32, render_size: int = 64,
                background: np.ndarray | None = None, style: str = "train") -> np.ndarray:
    """One ``size`` x ``size`` RGB crop of a ``kind`` sign ("stop" | "warning") under ``condition``.

    ``seed`` is anything np.random.default_rng accepts (an int or a SeedSequence);
    ``background`` an RGB crop (any size) of a scene already rendered in ``condition`` to put
    behind the sign, else a synthetic one lit here.
    """
    if style not in ("train", "shifted"):
        raise ValueError(f"unknown sign style {style!r}; choose 'train' or 'shifted'")
    shifted = style == "shifted"
    rng = np.random.default_rng(seed)
    if background is None:
        bg = synthetic_background(render_size, rng)
    else:
        bg = cv2.resize(background, (render_size, render_size), interpolation=cv2.INTER_AREA)
    layer, alpha = draw_sign(kind, render_size * SUPERSAMPLE, rng, shifted)
    fill = rng.uniform(0.6, 0.8) if shifted else rng.uniform(0.68, 1.03)  # > 1: cut by the crop edge
    sign, a = _place(layer, alpha, render_size, rng, fill)
    img = sign * a[..., None] + bg.astype(np.float32) * (1 - a[..., None])
    if rng.random() < 0.25:
        _occlude(img, rng)
    img = _light(img, a, condition, rng, shifted, background_lit=background is not None)
    img = _camera(img, condition, rng, shifted)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
