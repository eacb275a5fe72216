"""mmseg/mmengine plug-ins: our dataset format as an mmseg dataset, the condition-shift
transform of the ``real_aug`` control, and the sampler that keeps real exposure equal (and deals
a combined variant's extra slots out between its extra pools).

Importing this module registers them (a Config built from a dict does not process
``custom_imports``, see shared/notes/mm-stack.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.dist import get_dist_info
from mmengine.model import MMDistributedDataParallel
from mmseg.datasets import BaseSegDataset
from mmengine.registry import MODEL_WRAPPERS
from mmseg.registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
from mmcv.transforms import BaseTransform
from torch.utils.data import Sampler

from synthdrive import labels as label_spaces
from synthdrive.conditions import Condition, condition_key
from synthdrive.dataset import Dataset
from synthdrive.segment.photometric import shift_to_condition

REAL, EXTRA = "real", "extra"


def metainfo(label_space: str) -> dict:
    space = label_spaces.get(label_space)
    return dict(classes=space.classes, palette=[list(c) for c in space.colors])


@DATASETS.register_module()
class SynthDriveDataset(BaseSegDataset):
    """Frames of one or more synthdrive dataset folders.

    ``sources``: list of dicts, each {root, splits (list or None = all), ids (list, or a JSON file
    with {"kept": [...]}, or None = all), role ("real" | "extra"), shift_to (conditions to shift
    to, for the real_aug control), ignore_classes (class ids that become 255), pool (the name of
    the extra pool the source's frames belong to, for a variant with more than one kind of extra
    frame; default: its role)}.
    Every data info carries ``frame_id``, ``condition``, ``role`` and ``pool`` for per-condition
    metrics and for the sampler.
    """

    def __init__(self, sources: Sequence[dict], **kwargs):
        self.sources = [dict(s) for s in sources]
        kwargs.setdefault("reduce_zero_label", False)
        kwargs.setdefault("ignore_index", label_spaces.IGNORE)
        super().__init__(ann_file="", data_root="", **kwargs)

    def load_data_list(self) -> list[dict]:
        data_list = []
        for source in self.sources:
            root = Path(source["root"])
            dataset = Dataset(root)
            wanted = _wanted_ids(source.get("ids"))
            splits = source.get("splits")
            ignore = source.get("ignore_classes") or []
            label_map = {int(c): label_spaces.IGNORE for c in ignore} or None
            for r in dataset.records:
                if splits is not None and r["split"] not in splits:
                    continue
                if wanted is not None and r["id"] not in wanted:
                    continue
                data_list.append(dict(
                    img_path=str(root / "images" / f"{r['id']}.png"),
                    seg_map_path=str(root / "labels" / f"{r['id']}.png"),
                    label_map=label_map, reduce_zero_label=False, seg_fields=[],
                    frame_id=r["id"], condition=condition_key(r),
                    role=source.get("role", REAL), pool=source.get("pool") or source.get("role", REAL),
                    shift_to=list(source.get("shift_to") or []),
                    shift_stats=source.get("shift_stats") or {}))
        return data_list


def _wanted_ids(ids) -> set[str] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, os.PathLike)):
        return set(json.loads(Path(ids).read_text())["kept"])
    return set(ids)


@TRANSFORMS.register_module()
class ConditionShift(BaseTransform):
    """Shift the image toward one of ``results['shift_to']`` (no-op when that list is empty).

    Runs after LoadImageFromFile, whose images are BGR.
    """

    def transform(self, results: dict) -> dict:
        targets = results.get("shift_to") or []
        if not targets:
            return results
        rng = np.random.default_rng(np.random.randint(2 ** 31))
        target = Condition.parse(targets[rng.integers(len(targets))])
        rgb = results["img"][..., ::-1]
        shifted = shift_to_condition(np.ascontiguousarray(rgb), target, results.get("shift_stats") or {}, rng)
        results["img"] = np.ascontiguousarray(shifted[..., ::-1])
        results["condition"] = str(target)
        return results


@DATA_SAMPLERS.register_module()
class MixedInfiniteSampler(Sampler):
    """An endless index stream in which every consecutive ``real_per_batch + extra_per_batch``
    indices hold exactly ``real_per_batch`` real and ``extra_per_batch`` extra frames.

    With the dataloader's batch_size = real_per_batch + extra_per_batch, each batch is a full real
    batch (the same as the real-only variant's) with extra frames on top, so every variant sees
    the same number of real samples at the same iteration (the pilot's trap 2). Each pool is
    reshuffled per pass, seeded, and sharded over distributed ranks like mmengine's
    InfiniteSampler.

    ``extra_pools`` (the ``pool`` names of the extra frames, e.g. ["shifted", "synthetic"] for
    real_aug_synth) splits the extra frames into sub-pools and deals the extra slots out to them in
    turn, counting on across batches: with ``extra_per_batch`` a multiple of their number every
    batch holds the same number from each, otherwise the odd slot alternates between batches, so
    over the run each pool gets an equal share (:meth:`extra_seen`). None: one extra pool.
    """

    def __init__(self, dataset: BaseDataset, real_per_batch: int, extra_per_batch: int = 0,
                 seed: int | None = None, shuffle: bool = True, extra_pools: Sequence[str] | None = None):
        self.rank, self.world_size = get_dist_info()
        self.seed = 0 if seed is None else int(seed)
        self.shuffle = shuffle
        self.real_per_batch, self.extra_per_batch = int(real_per_batch), int(extra_per_batch)
        roles = [dataset.get_data_info(i)["role"] for i in range(len(dataset))]
        self.pools = {role: [i for i, r in enumerate(roles) if r == role] for role in (REAL, EXTRA)}
        if not self.pools[REAL]:
            raise ValueError("MixedInfiniteSampler: the dataset has no real frames")
        if self.extra_per_batch and not self.pools[EXTRA]:
            raise ValueError("MixedInfiniteSampler: extra_per_batch > 0 but the dataset has no extra frames")
        self.extra_pools = list(extra_pools or [])
        if len(set(self.extra_pools)) != len(self.extra_pools):
            raise ValueError(f"MixedInfiniteSampler: extra_pools {self.extra_pools} repeats a name")
        infos = [dataset.get_data_info(i) for i in self.pools[EXTRA]] if self.extra_pools else []
        self.sub_pools = {name: [i for i, info in zip(self.pools[EXTRA], infos) if info.get("pool") == name]
                          for name in self.extra_pools}
        if self.extra_per_batch:
            empty = [name for name, pool in self.sub_pools.items() if not pool]
            if empty:
                raise ValueError(f"MixedInfiniteSampler: no extra frames in pool(s) {', '.join(empty)}")
        self.counts = {REAL: 0, EXTRA: 0, **{name: 0 for name in self.extra_pools}}

    def _stream(self, role: str, offset: int) -> Iterator[int]:
        pool = self.pools[role] if role in self.pools else self.sub_pools[role]
        g = torch.Generator().manual_seed(self.seed + offset)
        while True:
            order = torch.randperm(len(pool), generator=g).tolist() if self.shuffle else range(len(pool))
            for k in list(order)[self.rank::self.world_size] or list(order)[:1]:
                yield pool[k]

    def __iter__(self) -> Iterator[int]:
        real = self._stream(REAL, 0)
        if not self.extra_per_batch:
            extras = []
        elif self.extra_pools:  # each pool in the order the single-pool variant draws it (offset 1)
            extras = [(name, self._stream(name, 1)) for name in self.extra_pools]
        else:
            extras = [(None, self._stream(EXTRA, 1))]
        slot = 0
        while True:
            for _ in range(self.real_per_batch):
                self.counts[REAL] += 1
                yield next(real)
            for _ in range(self.extra_per_batch):
                name, stream = extras[slot % len(extras)]
                slot += 1
                self.counts[EXTRA] += 1
                if name is not None:
                    self.counts[name] += 1
                yield next(stream)

    def extra_seen(self, batches: int) -> dict[str, int]:
        """Frames of each extra pool in the first ``batches`` batches of one rank's stream."""
        slots = batches * self.extra_per_batch
        n = len(self.extra_pools)
        return {name: slots // n + (k < slots % n) for k, name in enumerate(self.extra_pools)}

    def __len__(self) -> int:
        return len(self.pools[REAL]) + len(self.pools[EXTRA])

    def set_epoch(self, epoch: int) -> None:
        """Infinite stream: nothing to do per epoch (DistSamplerSeedHook calls this)."""


@MODEL_WRAPPERS.register_module()  # mmengine's root registry: Runner.wrap_model looks there
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper, usable on CPU (gloo): DDP needs ``device_ids=None`` for a CPU
    module, but mmengine's Runner always passes ``[LOCAL_RANK]``."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = next(module.parameters()).device.type == "cpu"
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)
