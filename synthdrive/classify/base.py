"""The one interface of a classify backend: what the stage, the cross-validation, the benchmarks
and the tests call, and what every backend (heuristic, effnet, clip) implements.

A frame is classified in two steps: ``features(images, labels)`` turns each frame into one row
of numbers (computed once per frame by the stage, in batches), and ``predict_features(x)`` turns
rows into predictions. A backend fit on known truth (``needs_fit``) also has ``fit_features(x,
truths)`` and ``clone()`` (an unfit copy, one per cross-validation fold); a zero-shot backend
(CLIP) has nothing to fit. ``save(folder)`` writes the stage's model artefact (the fit, or what a
zero-shot backend was given).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


class Classifier:
    name = ""
    needs_fit = True

    def features(self, images: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """(frames, dim) features of the images (and their label maps, where a backend uses them)."""
        raise NotImplementedError

    def fit_features(self, x: np.ndarray, truths: dict[str, Sequence[str | None]]) -> dict:
        """Fit on feature rows and their truths ({factor: value or None per row}); return the fit."""
        raise RuntimeError(f"the {self.name} classifier is not fit (needs_fit is False)")

    def predict_features(self, x: np.ndarray) -> list[dict]:
        """One ``{"weather", "time_of_day", "scores": {factor: {value: p}}}`` per feature row."""
        raise NotImplementedError

    def clone(self) -> "Classifier":
        """An unfit copy with the same settings (one per cross-validation fold)."""
        raise RuntimeError(f"the {self.name} classifier is not fit (needs_fit is False)")

    def save(self, folder: Path) -> Path:
        """The stage's model artefact in ``folder``; returns its path."""
        raise NotImplementedError
