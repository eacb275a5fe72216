"""Import a labelled dataset from disk (CamVid, Cityscapes-style, or plain images/ + labels/).

Layouts (``collect.folder.layout``):
  split_dirs   <path>/<split>/images/<name>.png + <path>/<split>/labels/<name>.png  (CamVid here)
  flat         <path>/images/<name>.* + <path>/labels/<name>.png, all in ``flat_split``
  cityscapes   <path>/leftImg8bit/<split>/<city>/<n>_leftImg8bit.png +
               <path>/gtFine/<split>/<city>/<n>_gtFine_labelTrainIds.png
Native label ids pass through ``label_map`` (raw value -> id in ``label_space``) and
``ignore_ids`` (-> 255), then through the label-space tables into the pipeline's space.
``resplit`` moves frames between splits by name, e.g. to hold out a contiguous block of a rare
condition as a test set when the dataset ships none (CamVid's val has no dusk frame).
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from synthdrive import labels, params
from synthdrive.dataset import SPLITS, DatasetError, DatasetWriter, check_pair, read_png
from synthdrive.params import ParamError, Params

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUTS = ("split_dirs", "flat", "cityscapes")
# Condition rules: how a frame's (weather, time of day) follows from its file name, where known.
CONDITION_RULES = {
    # CamVid: sequence 0001TP was filmed at dusk, 0006R0 and 0016E5 by day, all in clear weather.
    "camvid": lambda name: ("clear", "dusk" if name.startswith("0001TP") else "day"),
    "unknown": lambda name: (None, None),
}


def _pairs(root: Path, layout: str, flat_split: str) -> list[tuple[str, Path, Path]]:
    """(split, image path, label path) for every image; an image without a label is an error."""
    found = []
    if layout == "split_dirs":
        for split in SPLITS:
            images = root / split / "images"
            if images.is_dir():
                found += [(split, p, root / split / "labels" / f"{p.stem}.png")
                          for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    elif layout == "flat":
        found = [(flat_split, p, root / "labels" / f"{p.stem}.png")
                 for p in sorted((root / "images").glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    else:  # cityscapes
        for split in SPLITS:
            for p in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
                stem = p.name.removesuffix("_leftImg8bit.png")
                found.append((split, p, root / "gtFine" / split / p.parent.name /
                              f"{stem}_gtFine_labelTrainIds.png"))
    if not found:
        raise DatasetError(f"{root}: no images found for collect.folder.layout={layout!r}; "
                           f"check collect.folder.path and layout")
    for _, image, label in found:
        if not label.is_file():
            raise DatasetError(f"{image}: image has no label (expected {label}); add the label "
                               f"or remove the image")
    return found


def _frame_name(image: Path) -> str:
    return image.stem.removesuffix("_leftImg8bit")


def _check_unique_ids(pairs: list[tuple[str, Path, Path]]) -> None:
    """Frame ids are ``<split>_<file stem>``: two images giving one id (x.png beside x.jpg, or the
    same name from two splits that resplit moves together) would share a label and a record."""
    first: dict[str, Path] = {}
    for split, image, _ in pairs:
        fid = f"{split}_{_frame_name(image)}"
        if fid in first:
            raise DatasetError(f"{first[fid]} and {image}: both give frame id {fid!r} (ids are "
                               f"<split>_<file stem>); remove or rename one of them")
        first[fid] = image


def _resplit(rules, pairs: list[tuple[str, Path, Path]]) -> list[tuple[str, Path, Path]]:
    """Apply ``collect.folder.resplit``: the first rule whose ``match`` glob fits
    ``<split>/<file stem>`` gives the frame its ``split``."""
    rules = list(rules or [])
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) != {"match", "split"} or rule["split"] not in SPLITS:
            raise ParamError(f"params.yaml: collect.folder.resplit[{i}] is {rule!r}; each rule is "
                             f"{{match: '<split>/<name glob>', split: one of {list(SPLITS)}}}")
    used = [0] * len(rules)
    moved = []
    for split, image, label in pairs:
        for i, rule in enumerate(rules):
            if fnmatch.fnmatchcase(f"{split}/{image.stem}", rule["match"]):
                split, used[i] = rule["split"], used[i] + 1
                break
        moved.append((split, image, label))
    for rule, n in zip(rules, used):
        if not n:
            raise ParamError(f"params.yaml: collect.folder.resplit rule {rule!r} matches no frame "
                             f"(names are matched as '<split>/<file stem>', e.g. 'train/0001TP_008*')")
    return moved


def _native_table(cfg: Params, native: labels.LabelSpace, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(valid raw values mask, raw value -> pipeline id table), both indexed 0..255."""
    to_native = np.full(256, -1, np.int32)
    to_native[: native.num_classes] = np.arange(native.num_classes)
    for raw, nid in (cfg["label_map"] or {}).items():
        if not (0 <= int(nid) < native.num_classes or int(nid) == labels.IGNORE):
            raise ParamError(f"params.yaml: collect.folder.label_map maps {raw} to {nid}, outside "
                             f"{native.name} (0..{native.num_classes - 1} or 255)")
        to_native[int(raw)] = int(nid)
    for raw in cfg["ignore_ids"] or []:
        to_native[int(raw)] = labels.IGNORE
    to_native[labels.IGNORE] = labels.IGNORE
    valid = to_native >= 0
    native_to_target = labels.lookup(native.name, target)
    table = np.where(valid, native_to_target[np.clip(to_native, 0, 255)], labels.IGNORE)
    return valid, table.astype(np.uint8)


def collect(cfg: Params, writer: DatasetWriter, label_space: str) -> None:
    folder = cfg["folder"]
    root = params.resolve_path(folder["path"])  # queued experiments run in a temp copy: the repo's
    if not root.is_dir():
        raise ParamError(f"params.yaml: collect.folder.path={folder['path']!r} ({root}) is not a folder; "
                         f"point it at the dataset")
    layout = folder.choice("layout", LAYOUTS) \
        if "layout" in folder else "split_dirs"
    rule = CONDITION_RULES[folder.choice("condition_rule", CONDITION_RULES)]
    native = labels.get(folder["label_space"])
    valid, table = _native_table(folder, native, label_space)
    size = (cfg["width"], cfg["height"])
    pairs = _resplit(folder.get("resplit", []), _pairs(root, layout, folder.get("flat_split", "train")))
    _check_unique_ids(pairs)
    for split, image_path, label_path in tqdm(pairs, desc="collect folder", unit="frame"):
        image = read_png(image_path, "RGB")
        raw = read_png(label_path, "L")
        check_pair(image, raw, 256, label_path)
        bad = np.unique(raw[~valid[raw]])
        if bad.size:
            raise DatasetError(f"{label_path}: class ids {bad.tolist()} outside label space "
                               f"{native.name} (0..{native.num_classes - 1}); map them with "
                               f"collect.folder.label_map or collect.folder.ignore_ids")
        label = table[raw]
        if image.shape[1::-1] != size:
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
        name = _frame_name(image_path)
        weather, time_of_day = rule(name)
        writer.add({"id": f"{split}_{name}", "split": split, "weather": weather,
                    "time_of_day": time_of_day, "source": "folder",
                    "origin": str(image_path.relative_to(root))}, image, label)
