"""How a condition looks: light and sky per time of day, and the weather's post effects.

Each condition has a consistent signature (so a statistics-based classifier can tell them apart)
with randomised strengths (so it is not trivial):
  day    white light, blue sky             dusk   warm low light, orange horizon, lamps on
  night  dark blue ambient, black sky, street lights, lit windows, head and tail lights glowing
  clear  directional sun: lit and shaded facades, cast shadows (day, dusk), stars at night
  cloudy grey textured sky, flat desaturated light, no shadows
  rain   dark grey sky, streaks, dark wet road reflecting the sky and lights, light haze
  fog    everything blended into the fog colour by depth (Beer-Lambert), sky = fog
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from synthdrive.conditions import Condition


@dataclass(frozen=True)
class Look:
    ambient: tuple          # RGB light multiplier for albedo
    desat: float            # 0: full colour, 1: grey
    sun_shade: tuple        # (facade facing the light, facade facing away) multipliers
    shadow: tuple | None    # (dx per metre of height, dz per metre, darkening) of cast shadows
    sky_top: tuple
    sky_horizon: tuple
    sky_texture: float      # amplitude of low-frequency cloud texture
    stars: bool
    fog_color: tuple
    fog_density: float      # 1/m; 0 for none
    lights_on: bool         # cars' head and tail lights
    lamps_on: bool          # street lights and lit windows
    lamp_gain: float        # strength of light pools and glows
    lit_windows: float      # fraction of windows lit
    wet: bool
    rain: tuple | None      # (streaks per 100k px, alpha, slant, length as fraction of height)
    noise: float            # sensor noise sigma (0..255)


def make_look(condition: Condition, rng: np.random.Generator) -> Look:
    weather, time = condition
    u = rng.uniform
    jitter = lambda c, a=10: tuple(float(np.clip(x + u(-a, a), 0, 255)) for x in c)  # noqa: E731
    if time == "day":
        ambient = tuple(x * u(0.92, 1.08) for x in (1.0, 1.0, 0.97))
        sky_top, sky_hor = jitter((58, 118, 200), 14), jitter((172, 204, 236), 10)
        fog = (186, 189, 193)
    elif time == "dusk":
        ambient = tuple(x * u(0.56, 0.68) for x in (1.0, 0.7, 0.5))
        sky_top, sky_hor = jitter((62, 58, 118), 10), jitter((246, 150, 78), 12)
        fog = (160, 132, 118)
    else:
        ambient = tuple(x * u(0.13, 0.19) for x in (0.5, 0.56, 0.8))
        sky_top, sky_hor = jitter((5, 7, 18), 3), jitter((26, 30, 52), 5)
        fog = (36, 37, 44)
    lit = {"day": 0.0, "dusk": 0.2, "night": 0.3}[time]
    look = dict(ambient=ambient, desat=0.0, sun_shade=(1.0, 0.62), shadow=None, sky_top=sky_top,
                sky_horizon=sky_hor, sky_texture=0.0, stars=False, fog_color=sky_hor, fog_density=0.0,
                lights_on=time != "day", lamps_on=time != "day", lamp_gain={"day": 0.0, "dusk": 0.5, "night": 1.0}[time],
                lit_windows=lit * u(0.7, 1.3), wet=False, rain=None,
                noise={"day": 2.0, "dusk": 3.0, "night": 4.5}[time] * u(0.8, 1.2))
    if weather == "clear":
        if time != "night":
            elevation = u(0.6, 1.1) if time == "day" else u(0.14, 0.3)   # radians
            length = min(1 / np.tan(elevation), 4.0)
            look["shadow"] = (length * u(0.5, 0.9), length * u(-0.6, 0.3), u(0.5, 0.6) if time == "day" else u(0.62, 0.72))
            look["sun_shade"] = (1.0, u(0.55, 0.68) if time == "day" else u(0.45, 0.6))
        else:
            look["stars"] = True
    elif weather == "cloudy":
        grey = {"day": (168, 172, 180), "dusk": (118, 104, 104), "night": (24, 24, 28)}[time]
        hor = {"day": (206, 208, 212), "dusk": (176, 146, 126), "night": (62, 52, 46)}[time]
        look.update(ambient=tuple(a * u(0.72, 0.84) for a in ambient), desat=u(0.3, 0.45),
                    sun_shade=(0.92, 0.84), sky_top=jitter(grey, 8), sky_horizon=jitter(hor, 8),
                    sky_texture=u(10, 18) if time != "night" else 6.0)
        look["fog_color"] = look["sky_horizon"]
    elif weather == "rain":
        grey = {"day": (104, 108, 116), "dusk": (84, 76, 80), "night": (16, 17, 21)}[time]
        hor = {"day": (146, 150, 156), "dusk": (132, 112, 104), "night": (46, 42, 42)}[time]
        look.update(ambient=tuple(a * u(0.55, 0.66) for a in ambient), desat=u(0.4, 0.55),
                    sun_shade=(0.9, 0.82), sky_top=jitter(grey, 6), sky_horizon=jitter(hor, 6),
                    sky_texture=u(8, 14) if time != "night" else 4.0, fog_density=u(1 / 220, 1 / 140),
                    wet=True, lights_on=True,
                    rain=(u(120, 200), u(0.22, 0.35) if time != "night" else u(0.3, 0.42),
                          u(-0.25, 0.25), u(0.05, 0.09)))
        look["fog_color"] = look["sky_horizon"]
    else:  # fog
        look.update(ambient=tuple(a * u(0.8, 0.9) for a in ambient), desat=u(0.3, 0.45),
                    sun_shade=(0.92, 0.86), fog_color=jitter(fog, 6 if time == "night" else 10),
                    fog_density=u(0.035, 0.06), lights_on=True)
        look["sky_top"] = look["sky_horizon"] = look["fog_color"]
    return Look(**look)


def sky_rows(look: Look, rows: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, width, 3) uint8 sky: a gradient from the top colour to the horizon colour, with
    low-frequency cloud texture under overcast."""
    t = (np.linspace(0.0, 1.0, max(rows, 1), dtype=np.float32) ** 1.6)[:, None]
    grad = np.asarray(look.sky_top, np.float32) * (1 - t) + np.asarray(look.sky_horizon, np.float32) * t
    if not look.sky_texture:
        return np.broadcast_to(np.clip(grad, 0, 255).astype(np.uint8)[:, None, :], (rows, width, 3))
    cells = rng.standard_normal((4, 10)).astype(np.float32) * np.float32(look.sky_texture)
    tex = cv2.resize(cells, (width, max(rows, 1)), interpolation=cv2.INTER_CUBIC)
    sky = cv2.merge([tex, tex, tex])
    sky += grad[:, None, :]
    return np.clip(sky, 0, 255).astype(np.uint8)


_SCRATCH: dict = {}


def _scratch(name: str, shape: tuple) -> np.ndarray:
    """A float32 work buffer reused across frames: a fresh 1.5 MB temporary per step costs more
    in page faults than the arithmetic on it (measured ~3x slower post at 256x512)."""
    key = (name, shape)
    if key not in _SCRATCH:
        _SCRATCH[key] = np.empty(shape, np.float32)
    return _SCRATCH[key]


def post(image: np.ndarray, label: np.ndarray, depth: np.ndarray, look: Look, glows: list,
         pools: list, horizon: float, road_ids: tuple, ground_lut: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
    """Apply light pools, wet-road reflections, fog, glows and noise, then rain streaks.

    ``glows``: (u, v, radius px, RGB, strength, row of its mirror image in a wet road) of visible
    lights; ``pools``: (fixed-point polygon, RGB gain) of ground lit by lamps and headlights;
    ``ground_lut``: (256,) float32, 1 for ground classes. Blurred light works at quarter size.
    Per-pixel weights are expanded to three channels (cv2.merge) before multiplying: numpy
    broadcasting over a trailing axis of 3 is several times slower than same-shape arithmetic.
    """
    h, w = label.shape
    sh, sw = max(h // 4, 1), max(w // 4, 1)
    out, tmp, weight = (_scratch(name, (h, w, 3)) for name in ("out", "tmp", "weight"))
    plane = _scratch("plane", (h, w))
    np.copyto(out, image)
    if pools:
        light = np.zeros((sh, sw, 3), np.float32)
        for poly, gain in pools:
            cv2.fillPoly(light, [poly // 4], gain, cv2.LINE_8, 4)
        k = max(3, (sw // 10) | 1)
        cv2.resize(cv2.GaussianBlur(light, (k, k), 0), (w, h), dst=tmp, interpolation=cv2.INTER_LINEAR)
        np.take(ground_lut, label, out=plane)   # pools light the ground, not lamps or cars
        tmp *= cv2.merge([plane, plane, plane], dst=weight)
        tmp += 1.0
        out *= tmp
    if look.wet:
        np.logical_or(label == road_ids[0], label == road_ids[1], out=plane, casting="unsafe")
        small = cv2.resize(out, (sw, sh), interpolation=cv2.INTER_AREA)
        rows = np.clip(np.rint(2 * horizon / 4 - np.arange(sh)).astype(np.int64), 0, sh - 1)
        mirror = cv2.resize(cv2.blur(small[rows], (3, max(3, sh // 10))), (w, h), dst=tmp, interpolation=cv2.INTER_LINEAR)
        wet = cv2.merge([plane, plane, plane], dst=weight)
        mirror *= wet
        mirror *= np.float32(0.18)
        wet *= np.float32(-0.3)
        wet += 1.0
        out *= wet
        out += mirror
    if look.fog_density:
        np.multiply(depth, np.float32(-look.fog_density), out=plane)
        cv2.exp(plane, dst=plane)                # Beer-Lambert transmittance
        keep = cv2.merge([plane, plane, plane], dst=weight)
        out *= keep
        keep -= 1.0
        out -= cv2.multiply(keep, tuple(float(c) for c in look.fog_color) + (0.0,), dst=tmp)
    if glows:
        halo = np.zeros((sh, sw, 3), np.float32)
        spread = 1.6 if look.fog_density > 0.02 else 1.0
        for u, v, radius, color, strength, v_mirror in glows:
            r = max(1, int(round(radius * spread / 4)))
            cv2.circle(halo, (int(u // 4), int(v // 4)), r, tuple(c * strength for c in color), -1, cv2.LINE_AA)
            if look.wet and v_mirror < h:
                cv2.ellipse(halo, (int(u // 4), int(v_mirror // 4)), (r, max(2, r * 4)), 0, 0, 360,
                            tuple(c * strength * 0.45 for c in color), -1)
        k = max(3, (sw // 16) | 1)
        out += cv2.resize(cv2.GaussianBlur(halo, (k, k), 0), (w, h), dst=tmp, interpolation=cv2.INTER_LINEAR)
    # sensor noise: a random tile of Gaussian noise (a full frame of normals costs more than
    # everything else in a clear-day frame; a 64x128 period is invisible at this amplitude)
    tile = rng.standard_normal((64, 128), np.float32) * np.float32(look.noise)
    noise = np.tile(tile, (-(-h // 64), -(-w // 128)))[:h, :w]
    out += cv2.merge([noise, noise, noise], dst=weight)
    np.clip(out, 0, 255, out=out)
    frame = out.astype(np.uint8)
    if look.rain:   # anti-aliased streaks drawn opaque on a copy, then blended in
        per_100k, alpha, slant, length = look.rain
        n = int(per_100k * h * w / 1e5)
        x0 = rng.uniform(0, w, n)
        y0 = rng.uniform(-0.1 * h, h, n)
        ln = length * h * rng.uniform(0.6, 1.2, n)
        pts = np.stack([np.stack([x0, y0], 1), np.stack([x0 + slant * ln, y0 + ln], 1)], 1)
        streaks = frame.copy()
        tone = tuple(float(c) * 0.6 + 90 for c in look.sky_horizon)
        cv2.polylines(streaks, np.round(pts * 4).astype(np.int32), False, tone, 1, cv2.LINE_AA, 2)
        cv2.addWeighted(frame, 1.0 - alpha, streaks, alpha, 0.0, dst=frame)
    return frame
