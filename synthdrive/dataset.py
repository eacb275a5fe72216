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
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from synthdrive import labels as label_spaces
from synthdrive.errors import UserError, machine_id, process_gone, process_identity

SPLITS = ("train", "val", "test")


class DatasetError(UserError, ValueError):
    """Bad data on disk; the message names the file and what to do."""


# A temp folder's name says who writes it: .<name>.tmp-<pid>-<start, 1/100 s>-<machine>-<random>
# (.<name>.old-... for the output being replaced), so a later write of the same output can tell
# the folders of killed writers (removed) from those of live ones (kept).
_LEGACY_AGE_S = 3600


def _owner_token() -> str:
    me = process_identity()
    return f"{me['pid']}-{round(float(me['start']) * 100)}-{machine_id()}"


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe, only where /proc does not say
    os.umask(mask)
    return mask


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    with os.scandir(path) as entries:
        for entry in entries:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def remove_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove the temp folders that killed writers of ``final`` left beside it; return them.

    A folder goes when its writer ran on this machine (host and pid namespace) and is gone.
    Folders of live writers, or of writers on another machine sharing the folder, stay. Folders
    named the old way (``.<name>.tmp-<random>``, ``.<name>.old-<pid>``, no owner) go once
    untouched for an hour."""
    final = Path(final)
    name = re.escape(final.name)
    owned = re.compile(rf"\.{name}\.(?:tmp|old)-(\d+)-(\d+)-([0-9a-f]{{8}})-[a-z0-9_]+")
    legacy = re.compile(rf"\.{name}\.(?:tmp-[a-z0-9_]{{8}}|old-\d+)")
    here, removed = machine_id(), []
    try:
        siblings = [p for p in final.parent.iterdir() if p.name.startswith(f".{final.name}.")]
    except OSError:
        return removed
    for path in siblings:
        try:
            m = owned.fullmatch(path.name)
            if m:
                stale = m.group(3) == here and process_gone(int(m.group(1)), int(m.group(2)) / 100)
            else:
                stale = bool(legacy.fullmatch(path.name)) and path.is_dir() and \
                    time.time() - _newest_mtime(path) > _LEGACY_AGE_S
            if stale:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove: never fail the write for it
    return removed


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final``, on error vanishes.

    First removes what killed writers of ``final`` left (see remove_stale_temps). The output gets
    the usual permissions (0o777 minus the umask), not mkdtemp's owner-only 0o700."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    token = _owner_token()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{token}-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{tmp.name[len(f'.{final.name}.tmp-'):]}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def write_json(path: str | os.PathLike, data, sort_keys: bool = True) -> None:
    """Write JSON atomically (metrics files are DVC outs too); ``sort_keys=False`` keeps an order
    that means something (eval.json's variants in pipeline order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")
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
            try:  # a fault (duplicate id, label outside the space, wrong size) leaves no output
                Dataset(self.tmp).validate()
            except DatasetError as e:
                error = DatasetError(f"{str(e).replace(str(self.tmp), str(self.root))} "
                                     f"(nothing was written to {self.root})")
                self._ctx.__exit__(DatasetError, error, None)
                raise error from None
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
        """Check ids, splits, sizes, id range and readability of every frame; raise on the first
        fault, naming the file (and, for a duplicate id, the source files of both records)."""
        index = self.root / "index.jsonl"
        seen: dict[str, dict] = {}
        for n, r in enumerate(self.records, 1):
            fid = r.get("id") if isinstance(r, dict) else None
            if not isinstance(fid, str) or not fid:
                raise DatasetError(f"{index}:{n}: record has no id; regenerate the dataset")
            if fid in seen:
                origins = [x.get("origin") for x in (seen[fid], r)]
                detail = f" (from {origins[0]} and {origins[1]})" if all(origins) else ""
                raise DatasetError(f"{index}:{n}: duplicate id {fid!r}{detail}; ids must be unique")
            seen[fid] = r
            if r.get("split") not in SPLITS:
                raise DatasetError(f"{index}:{n}: frame {fid} has split {r.get('split')!r}; "
                                   f"splits are {', '.join(SPLITS)}")
        for sub in ("images", "labels", "depth"):
            extra = {p.stem for p in (self.root / sub).glob("*.png")} - set(seen)
            if extra:
                raise DatasetError(f"{self.root / sub}: {len(extra)} files not in index.jsonl, "
                                   f"e.g. {sorted(extra)[0]}.png")
        height, width = self.meta.get("height"), self.meta.get("width")
        size = (height, width) if all(isinstance(v, int) and not isinstance(v, bool)
                                      for v in (height, width)) else None
        n = self.label_space.num_classes
        for fid in seen:
            image, label = self.image(fid), self.label(fid)
            check_pair(image, label, n, self.root / "labels" / f"{fid}.png")
            if size and image.shape[:2] != size:
                raise DatasetError(f"{self.root / 'images' / f'{fid}.png'}: image is {image.shape[1]}x"
                                   f"{image.shape[0]} but meta.json says {width}x{height}")


def check_pair(image: np.ndarray, label: np.ndarray, num_classes: int, label_path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                           f"is {image.shape[1]}x{image.shape[0]}; labels must match their image")
    bad = np.unique(label[(label >= num_classes) & (label != label_spaces.IGNORE)])
    if bad.size:
        raise DatasetError(f"{label_path}: class ids {bad.tolist()} outside the label space "
                           f"(0..{num_classes - 1}, 255 = ignore); fix the label map "
                           f"(collect.folder.label_map) or the file")
