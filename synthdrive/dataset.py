"""The one dataset format every stage reads and writes.

    <root>/meta.json           {"label_space": ..., "source": ..., ...}
    <root>/index.jsonl         one record per frame: {"id", "split", "weather", "time_of_day", ...}
    <root>/images/<id>.png     RGB uint8
    <root>/labels/<id>.png     uint8 class ids in meta["label_space"], 255 = ignore
    <root>/depth/<id>.png      optional, uint16 millimetres

Writers go through ``DatasetWriter`` (or ``atomic_dir``): everything lands in a temporary
sibling folder that is renamed over ``root`` only when the whole write succeeded, so a failed
stage leaves no partial output.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from synthdrive import labels as label_spaces
from synthdrive.errors import UserError

SPLITS = ("train", "val", "test")


class DatasetError(UserError, ValueError):
    """Bad data on disk; the message names the file and what to do."""


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final``, on error vanishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (metrics files are DVC outs too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg}); fix or regenerate it")
    return records


def write_jsonl(path: str | os.PathLike, records) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    tmp.replace(path)


def read_png(path: str | os.PathLike, mode: str) -> np.ndarray:
    """Read a PNG as RGB ('RGB') or class ids ('L'), naming the file when it is unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if mode == "L" and im.mode not in ("L", "P"):
                raise DatasetError(f"{path}: label image has mode {im.mode}; labels must be "
                                   f"single-channel 8-bit class ids")
            return np.asarray(im.convert("RGB") if mode == "RGB" else im)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Exception as e:  # PIL raises several types for truncated or corrupt files
        raise DatasetError(f"{path}: unreadable image ({e}); replace or remove this file") from None


def write_png(path: Path, array: np.ndarray) -> None:
    # compress_level 1: several times faster than the default, files ~30% larger.
    Image.fromarray(array).save(path, compress_level=1)


class DatasetWriter:
    """Collects frames into the dataset format; use as a context manager for atomicity."""

    def __init__(self, root: str | os.PathLike, label_space: str, **meta):
        label_spaces.get(label_space)  # fail early on a bad name
        self.root = Path(root)
        self.meta = {"label_space": label_space, **meta}
        self.records: list[dict] = []
        self._ctx = None
        self.tmp: Path | None = None

    def __enter__(self) -> "DatasetWriter":
        self._ctx = atomic_dir(self.root)
        self.tmp = self._ctx.__enter__()
        for sub in ("images", "labels"):
            (self.tmp / sub).mkdir()
        return self

    def add(self, record: dict, image: np.ndarray, label: np.ndarray,
            depth: np.ndarray | None = None) -> None:
        fid = record["id"]
        if image.shape[:2] != label.shape:
            raise DatasetError(f"frame {fid}: label {label.shape} differs from image {image.shape[:2]}")
        write_png(self.tmp / "images" / f"{fid}.png", image)
        write_png(self.tmp / "labels" / f"{fid}.png", label)
        if depth is not None:
            (self.tmp / "depth").mkdir(exist_ok=True)
            write_png(self.tmp / "depth" / f"{fid}.png", depth)
        self.records.append(record)

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            write_jsonl(self.tmp / "index.jsonl", self.records)
            write_json(self.tmp / "meta.json", self.meta)
        return self._ctx.__exit__(*exc)


class Dataset:
    """A dataset folder in the format above."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for name in ("meta.json", "index.jsonl"):
            if not (self.root / name).is_file():
                raise DatasetError(f"{self.root / name}: missing; is {self.root} a synthdrive "
                                   f"dataset? Run the stage that makes it (e.g. dvc repro collect)")
        self.meta = json.loads((self.root / "meta.json").read_text())
        self.label_space = label_spaces.get(self.meta["label_space"])
        self.records = read_jsonl(self.root / "index.jsonl")

    def __len__(self) -> int:
        return len(self.records)

    def split(self, split: str) -> list[dict]:
        return [r for r in self.records if r["split"] == split]

    def image(self, fid: str) -> np.ndarray:
        return read_png(self.root / "images" / f"{fid}.png", "RGB")

    def label(self, fid: str) -> np.ndarray:
        return read_png(self.root / "labels" / f"{fid}.png", "L")

    def validate(self) -> None:
        """Check ids, sizes, id range and readability of every frame; raise on the first fault."""
        ids = [r["id"] for r in self.records]
        dup = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
        if dup:
            raise DatasetError(f"{self.root / 'index.jsonl'}: duplicate ids {sorted(dup)[:5]}")
        for sub in ("images", "labels"):
            extra = {p.stem for p in (self.root / sub).glob("*.png")} - set(ids)
            if extra:
                raise DatasetError(f"{self.root / sub}: {len(extra)} files not in index.jsonl, "
                                   f"e.g. {sorted(extra)[0]}.png")
        n = self.label_space.num_classes
        for r in self.records:
            image, label = self.image(r["id"]), self.label(r["id"])
            check_pair(image, label, n, self.root / "labels" / f"{r['id']}.png")


def check_pair(image: np.ndarray, label: np.ndarray, num_classes: int, label_path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                           f"is {image.shape[1]}x{image.shape[0]}; labels must match their image")
    bad = np.unique(label[(label >= num_classes) & (label != label_spaces.IGNORE)])
    if bad.size:
        raise DatasetError(f"{label_path}: class ids {bad.tolist()} outside the label space "
                           f"(0..{num_classes - 1}, 255 = ignore); fix the label map "
                           f"(collect.folder.label_map) or the file")
