"""Label spaces (CamVid-11, Cityscapes-19, CARLA tags, the renderer's ids) and maps between them.

The classes, colours and mapping tables live in ``label_spaces.yaml``; this module only turns
them into lookup arrays, so every stage converts and draws labels the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from synthdrive.errors import UserError

IGNORE = 255
_TABLES = Path(__file__).with_name("label_spaces.yaml")


class LabelSpaceError(UserError, KeyError):
    """An unknown label space, class or mapping."""


@dataclass(frozen=True)
class LabelSpace:
    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, class_name: str) -> int:
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise LabelSpaceError(f"label space {self.name!r} has no class {class_name!r}; "
                           f"classes: {', '.join(self.classes)}") from None

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colour per id; ids outside the space (and 255) are black."""
        pal = np.zeros((256, 3), np.uint8)
        pal[: self.num_classes] = self.colors
        return pal


@cache
def _tables() -> dict:
    return yaml.safe_load(_TABLES.read_text())


def names() -> list[str]:
    return sorted(_tables()["spaces"])


@cache
def get(name: str) -> LabelSpace:
    spaces = _tables()["spaces"]
    if name not in spaces:
        raise LabelSpaceError(f"unknown label space {name!r} (labels.space in params.yaml); "
                       f"choose one of: {', '.join(sorted(spaces))}")
    classes, colors = zip(*spaces[name])
    return LabelSpace(name, tuple(classes), tuple(tuple(c) for c in colors))


@cache
def lookup(source: str, target: str) -> np.ndarray:
    """(256,) uint8 table taking source ids to target ids (unmapped and 255 -> 255)."""
    src, dst = get(source), get(target)
    table = np.full(256, IGNORE, np.uint8)
    if source == target:
        table[: src.num_classes] = np.arange(src.num_classes)
        return table
    mapping = _tables()["mappings"].get(source, {}).get(target)
    if mapping is None:
        raise LabelSpaceError(f"no mapping from label space {source!r} to {target!r} in {_TABLES.name}")
    missing = set(src.classes) - set(mapping)
    if missing:
        raise LabelSpaceError(f"{_TABLES.name}: mapping {source}->{target} lacks {sorted(missing)}")
    for i, cls in enumerate(src.classes):
        if mapping[cls] is not None:
            table[i] = dst.index(mapping[cls])
    table.setflags(write=False)
    return table


def convert(label: np.ndarray, source: str, target: str) -> np.ndarray:
    """Map a uint8 label image from one space to another."""
    return lookup(source, target)[label]


def colorize(label: np.ndarray, space: str) -> np.ndarray:
    """RGB drawing of a label image (ignore is black)."""
    return get(space).palette()[label]
