"""Pictures for the report as data URIs: PNG files from the stages and matplotlib charts.

Everything is inlined so the page opens offline: no file the browser would have to fetch.
"""
from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from PIL import Image  # noqa: E402

DPI = 100


@dataclass(frozen=True)
class Picture:
    """An inlined image and the width to show it at (small sample grids are shown enlarged)."""

    uri: str
    width: int
    height: int
    display_width: int


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image(path: str | os.PathLike, max_width: int, min_display_width: int = 900) -> Picture:
    """A PNG (or any image PIL reads) inlined, shrunk to ``max_width`` pixels if wider; a grid of
    small tiles narrower than ``min_display_width`` is shown enlarged (at most 2x)."""
    path = Path(path)
    with Image.open(path) as img:
        if img.width <= max_width and img.format == "PNG":
            data, size = path.read_bytes(), img.size
        else:
            img = img.convert("RGB")
            if img.width > max_width:
                img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, "PNG", optimize=True)
            data, size = buf.getvalue(), img.size
    return picture(data, *size, min_display_width=min_display_width)


def picture(png: bytes, width: int, height: int, min_display_width: int = 900) -> Picture:
    scale = max(1, min(2, round(min_display_width / max(width, 1))))
    return Picture(png_uri(png), width, height, width * scale)


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return png_uri(buf.getvalue())


def grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float | None]], ylabel: str,
                 title: str, ylim: tuple[float, float] | None = None, log: bool = False,
                 errors: Mapping[str, Sequence[float | None]] | None = None, fmt: str = "%.2f") -> str:
    """Vertical bars: one group per ``groups`` entry, one bar per series (missing = None), with
    optional error bars (e.g. the spread over seeds)."""
    n = max(len(series), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.45 * len(groups) * n + 2), 11), 3.6))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        heights = [float("nan") if v is None else v for v in values]
        yerr = None
        if errors and name in errors:
            yerr = [0.0 if e is None else e for e in errors[name]]
        bars = ax.bar(xs, heights, width, label=name, yerr=yerr, capsize=2 if yerr else 0)
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _figure_uri(fig)


def stacked_barh(rows: Sequence[str], stacks: Mapping[str, Sequence[int]], xlabel: str,
                 title: str) -> str:
    """Horizontal stacked bars (e.g. frames per condition, stacked by split)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    left = [0] * len(rows)
    for name, values in stacks.items():
        ax.barh(rows, values, left=left, label=name)
        left = [a + b for a, b in zip(left, values)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xlim(0, max(left or [1]) * 1.12)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _figure_uri(fig)


def confusion(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str,
              xlabel: str = "predicted", ylabel: str = "true") -> str:
    """A confusion matrix as a heatmap with the counts written in the cells."""
    size = max(3.5, 0.45 * len(labels) + 1.8)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    image = ax.imshow(matrix, cmap="Blues")
    peak = max((max(row) for row in matrix), default=0) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=7,
                        color="white" if value > peak / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _figure_uri(fig)


def curves(series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str, title: str) -> str:
    """Line plot of named sequences (loss/accuracy curves)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _figure_uri(fig)


def timeline(stages: Sequence[str], seconds: Sequence[float], title: str) -> str:
    """Horizontal bars of wall time per stage."""
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(stages) + 1.3))
    ax.barh(stages, seconds, color="#4c78a8")
    for y, s in enumerate(seconds):
        ax.text(s, y, f" {s:.1f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_xlim(0, max(seconds or [1]) * 1.2)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _figure_uri(fig)
