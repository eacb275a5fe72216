"""Image statistics that tell weather and time of day apart, for the heuristic classifier.

Each feature is a number a person can read (mean luminance, warmth, dark-channel haze, ...);
which values mean "night" or "fog" is not decided here but fit on frames of known condition
(synthdrive.classify.heuristic), so the same code calibrates to rendered and to real frames.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# Work at most this many rows high: the statistics are global, finer detail only costs time.
MAX_HEIGHT = 128
PERCENTILES = (5, 25, 50, 75, 95)


def feature_names() -> list[str]:
    return ([f"lum_p{q}" for q in PERCENTILES] + ["lum_mean", "lum_std", "dark_frac", "bright_frac"]
            + ["warmth", "warmth_bright", "red_chroma", "blue_chroma"]
            + ["sat_mean", "sat_std", "rms_contrast", "local_contrast"]
            + ["dark_channel", "dark_channel_rel", "haze_flatness"]
            + ["grad_x", "grad_y", "streak_ratio", "streak_frac"]
            + ["sky_lum", "sky_sat", "sky_blue", "sky_std", "sky_minus_ground"]
            # The same cues relative to the frame's brightness, so weather learnt by day carries
            # over to dusk and night frames (rare in training, but present in the test split).
            + ["rel_local_contrast", "rel_grad", "rel_streak_frac", "rel_horizon_contrast",
               "rel_bottom_contrast", "rel_sky_std", "rel_dark_channel_std"])


def _downsample(image: np.ndarray, label: np.ndarray | None):
    step = max(1, -(-image.shape[0] // MAX_HEIGHT))
    return image[::step, ::step], (label[::step, ::step] if label is not None else None)


def sky_mask(shape: tuple[int, int], label: np.ndarray | None, sky_id: int | None) -> np.ndarray:
    """Sky pixels from the label when it has enough of them, else the top fifth of the frame."""
    if label is not None and sky_id is not None:
        mask = label == sky_id
        if mask.mean() >= 0.01:
            return mask
    mask = np.zeros(shape, bool)
    mask[: max(1, shape[0] // 5)] = True
    return mask


def image_features(image: np.ndarray, label: np.ndarray | None = None,
                   sky_id: int | None = None) -> np.ndarray:
    """The feature vector (order: feature_names()) of one RGB uint8 frame."""
    image, label = _downsample(image, label)
    rgb = image.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    total = rgb.sum(-1) + 1e-3
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = (mx - mn) / (mx + 1e-3)
    bright = lum >= np.percentile(lum, 75)  # >=: never empty, even when the top quarter is clipped

    # Haze (He et al.'s dark channel): fog lifts the darkest channel everywhere and flattens it.
    dark = ndimage.minimum_filter(mn, size=7)
    # Rain streaks: thin near-vertical lines, i.e. strong horizontal gradients in a high-pass
    # image that vertical gradients do not match.
    high = lum - ndimage.uniform_filter(lum, size=5)
    gx = np.abs(np.diff(high, axis=1)).mean()
    gy = np.abs(np.diff(high, axis=0)).mean()
    vert_line = np.abs(ndimage.convolve1d(high, [-1.0, 2.0, -1.0], axis=1))
    horiz_line = np.abs(ndimage.convolve1d(high, [-1.0, 2.0, -1.0], axis=0))
    streak_frac = float(((vert_line > 0.04) & (vert_line > 2 * horiz_line)).mean())

    mean = lum.mean() + 1e-3
    rel_streak = float(((vert_line > 0.15 * mean) & (vert_line > 2 * horiz_line)).mean())
    h = lum.shape[0]
    horizon_band, bottom_band = lum[int(0.3 * h):int(0.6 * h)], lum[int(0.7 * h):]

    sky = sky_mask(lum.shape, label, sky_id)
    ground = ~sky
    sky_lum = lum[sky].mean()
    return np.array([
        *np.percentile(lum, PERCENTILES), lum.mean(), lum.std(),
        (lum < 0.15).mean(), (lum > 0.85).mean(),
        (r - b).mean(), (r - b)[bright].mean(), (r / total).mean(), (b / total).mean(),
        sat.mean(), sat.std(), lum.std() / (lum.mean() + 1e-3),
        np.abs(ndimage.laplace(lum)).mean(),
        dark.mean(), dark.mean() / (lum.mean() + 1e-3), dark.std(),
        gx, gy, gx / (gy + 1e-4), streak_frac,
        sky_lum, sat[sky].mean(), (b - r)[sky].mean(), lum[sky].std(),
        sky_lum - (lum[ground].mean() if ground.any() else sky_lum),
        np.abs(ndimage.laplace(lum)).mean() / mean, (gx + gy) / mean, rel_streak,
        horizon_band.std() / (horizon_band.mean() + 1e-3), bottom_band.std() / (bottom_band.mean() + 1e-3),
        lum[sky].std() / (sky_lum + 1e-3), dark.std() / mean,
    ], dtype=np.float64)
