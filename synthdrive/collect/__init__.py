"""Collectors: sources of labelled driving frames, chosen by ``collect.source`` in params.yaml.

Every collector is a function ``collect(cfg, writer, label_space)`` that adds frames to a
``DatasetWriter`` (records carry id, split, weather, time_of_day, source) with labels already in
``label_space``. Modules are imported lazily so a missing optional backend (carla) costs nothing.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from synthdrive.dataset import Dataset, DatasetWriter
from synthdrive.params import Params

COLLECTORS = {
    "procedural": "synthdrive.collect.procedural",
    "folder": "synthdrive.collect.folder",
    "carla": "synthdrive.collect.carla",
}


def collect(cfg: Params, label_space: str, out: str | Path) -> Dataset:
    """Fill ``out`` atomically from the source named in ``cfg['source']``; return the dataset."""
    source = cfg.choice("source", COLLECTORS)
    module = importlib.import_module(COLLECTORS[source])
    with DatasetWriter(out, label_space, source=source,
                       height=cfg["height"], width=cfg["width"]) as writer:
        module.collect(cfg, writer, label_space)
    return Dataset(out)
