"""Captions: a condition-free description of each frame plus its condition phrase.

Backends (``caption.backend``): ``template`` (from the label map, depth and instance counts;
CPU, milliseconds) and ``llava`` (LLaVA from a local model folder, imported only when chosen).
Moving a caption to a target condition (what synthesis prompts use) is ``synthdrive.prompts``,
which the synthesize stage imports without this package.
"""
from __future__ import annotations


import numpy as np
from PIL import Image

from synthdrive.caption.template import describe
from synthdrive.conditions import Condition
from synthdrive.dataset import Dataset, DatasetError
from synthdrive.labels import IGNORE
from synthdrive.params import Params
from synthdrive.prompts import condition_phrase

__all__ = ["BACKENDS", "batches", "caption_text", "classes_by_area", "make_captioner", "read_depth"]
BACKENDS = ("template", "llava")


def caption_text(description: str, condition: Condition) -> str:
    """'A street scene with ..., in the rain at night.'"""
    body = description.strip().rstrip(".")
    return f"{body}, {condition_phrase(condition)}."


def read_depth(dataset: Dataset, fid: str) -> np.ndarray | None:
    """Depth in metres from ``depth/<id>.png`` (uint16 millimetres), or None without depth/.

    Not dataset.read_png: that one reads only 8-bit labels and RGB.
    """
    path = dataset.root / "depth" / f"{fid}.png"
    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            return np.asarray(im).astype(np.float32) / 1000.0
    except Exception as e:
        raise DatasetError(f"{path}: unreadable depth image ({e}); regenerate the dataset") from None


def classes_by_area(label: np.ndarray, classes, min_area: float) -> list[str]:
    valid = label != IGNORE
    ids, counts = np.unique(label[valid], return_counts=True)
    total = max(int(valid.sum()), 1)
    order = sorted(((c / total, classes[i]) for i, c in zip(ids, counts)), reverse=True)
    return [name for share, name in order if share >= min_area]


class TemplateCaptioner:
    name = "template"

    def __init__(self, cfg: Params, dataset: Dataset):
        self.cfg, self.dataset = cfg, dataset

    def describe(self, records: list[dict]) -> list[str]:
        c = self.cfg
        return [describe(self.dataset.label(r["id"]), self.dataset.label_space,
                         depth=read_depth(self.dataset, r["id"]), instances=r.get("instances"),
                         min_area=float(c["min_area"]), max_classes=int(c["max_classes"]),
                         near_m=float(c["near_m"]), far_m=float(c["far_m"]))
                for r in records]


class LlavaRecordCaptioner:
    """The LLaVA backend fed from dataset records (image + the label's classes by area)."""

    name = "llava"

    def __init__(self, cfg: Params, dataset: Dataset, min_area: float):
        from synthdrive.caption.llava import LlavaCaptioner

        self.dataset, self.min_area = dataset, min_area
        self.model = LlavaCaptioner(cfg["model_dir"], cfg["query"], int(cfg["max_new_tokens"]),
                                    float(cfg["temperature"]), int(cfg["batch_size"]),
                                    bool(cfg["load_in_4bit"]), cfg["device"], int(cfg["seed"]))

    def describe(self, records: list[dict]) -> list[str]:
        images = [self.dataset.image(r["id"]) for r in records]
        classes = [classes_by_area(self.dataset.label(r["id"]), self.dataset.label_space.classes,
                                   self.min_area) for r in records]
        return self.model.describe(images, classes)


def make_captioner(cfg: Params, dataset: Dataset):
    backend = cfg.choice("backend", BACKENDS)
    if backend == "template":
        return TemplateCaptioner(cfg["template"], dataset)
    return LlavaRecordCaptioner(cfg["llava"], dataset, float(cfg["template.min_area"]))


def batches(items: list, size: int):
    return (items[i:i + size] for i in range(0, len(items), size))

