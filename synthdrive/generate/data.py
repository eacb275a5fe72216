"""Training data for generators: (layout, condition, image) triples held in memory at the
training size, and the encodings every backend shares (one-hot layouts, condition ids)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from synthdrive.conditions import TIMES_OF_DAY, WEATHERS, Condition
from synthdrive.dataset import Dataset, DatasetError
from synthdrive.labels import IGNORE

NULL_WEATHER, NULL_TIME = len(WEATHERS), len(TIMES_OF_DAY)  # "no condition" ids (guidance dropout)


def condition_ids(conditions: Sequence[Condition]) -> tuple[torch.Tensor, torch.Tensor]:
    """(weather ids, time-of-day ids) as LongTensors."""
    return (torch.tensor([WEATHERS.index(c.weather) for c in conditions], dtype=torch.long),
            torch.tensor([TIMES_OF_DAY.index(c.time_of_day) for c in conditions], dtype=torch.long))


def one_hot(layouts: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) uint8 ids -> (B, num_classes + 1, H, W) float; the last channel is 'ignore'."""
    ids = layouts.long().clone()
    ids[(ids >= num_classes) | (ids == IGNORE)] = num_classes
    return F.one_hot(ids, num_classes + 1).permute(0, 3, 1, 2).float()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def resize_layout(layout: np.ndarray, height: int, width: int) -> np.ndarray:
    if layout.shape == (height, width):
        return layout
    return np.asarray(Image.fromarray(layout).resize((width, height), Image.NEAREST))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


@dataclass
class TrainData:
    """Frames of one split at the training size: images (N,3,H,W) in [-1,1], layouts (N,H,W)."""

    ids: list[str]
    images: torch.Tensor
    layouts: torch.Tensor
    conditions: list[Condition]
    num_classes: int

    def __len__(self) -> int:
        return len(self.ids)

    def draw(self, rng: np.random.Generator, batch_size: int):
        """A training batch from ``rng`` (frames with replacement, each flipped left-right with
        probability 1/2): (one-hot layouts, weather ids, time ids, images). The one way every
        backend draws, so a batch is a function of the step's stream."""
        index = rng.integers(0, len(self), batch_size)
        flip = rng.random(batch_size) < 0.5
        layouts, images = self.layouts[index], self.images[index]
        if flip.any():
            f = torch.from_numpy(flip)
            layouts = torch.where(f[:, None, None], layouts.flip(-1), layouts)
            images = torch.where(f[:, None, None, None], images.flip(-1), images)
        weather, time = condition_ids([self.conditions[i] for i in index])
        return one_hot(layouts, self.num_classes), weather, time, images


def load_split(dataset: Dataset, split: str, height: int, width: int,
               conditions: dict[str, Condition], limit: int | None = None) -> TrainData:
    """Frames of ``split`` resized to (height, width), with their conditions ({id: Condition},
    from synthdrive.conditions.frame_conditions); ``limit`` keeps the first N (by id)."""
    records = sorted(dataset.split(split), key=lambda r: r["id"])[:limit]
    if not records:
        raise DatasetError(f"{dataset.root}: no '{split}' frames to train or evaluate the generator on")
    images, layouts = [], []
    for r in tqdm(records, desc=f"load {split}", leave=False):
        images.append(resize_image(dataset.image(r["id"]), height, width))
        layouts.append(resize_layout(dataset.label(r["id"]), height, width))
    images_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return TrainData([r["id"] for r in records], images_t, torch.from_numpy(np.stack(layouts)),
                     [conditions[r["id"]] for r in records], dataset.label_space.num_classes)
