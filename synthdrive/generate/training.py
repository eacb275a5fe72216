"""Resumable training shared by the in-project backends: a checkpoint holds every stateful
object (nets, optimizers, EMA) and the step; batches and noise are a function of (seed, step),
so a resumed run replays exactly what an uninterrupted one would have done."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from synthdrive.generate.data import TrainData

# Settings that only say how long or how often: changing them keeps a checkpoint resumable
# (raising iterations continues training from the last checkpoint).
CADENCE = {"iterations", "sample_every", "checkpoint_every", "resume", "eval_frames"}


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict): ...


def fingerprint(cfg: dict, backend: str, data: TrainData) -> str:
    """What a checkpoint must match to be resumed: the backend's settings but cadence, the
    shared ones (size, seed), and the training frames."""
    shared = {k: v for k, v in cfg.items() if not isinstance(v, dict) and k not in CADENCE}
    own = {k: v for k, v in cfg[backend].items() if k not in CADENCE}
    blob = json.dumps([backend, shared, own, data.ids, data.num_classes], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpoint:
    """``<dir>/<backend>.pt``: resumed when its fingerprint matches and it is not past the end."""

    def __init__(self, directory: Path | None, backend: str, fingerprint: str, enabled: bool = True):
        self.path = Path(directory) / f"{backend}.pt" if directory else None
        self.fingerprint, self.enabled = fingerprint, enabled

    def resume(self, objects: dict[str, Stateful], iterations: int) -> int:
        """Load ``objects`` from the checkpoint; the step to start from (0 = fresh)."""
        if not (self.enabled and self.path and self.path.is_file()):
            return 0
        state = torch.load(self.path, weights_only=True)
        if state["fingerprint"] != self.fingerprint or state["step"] > iterations:
            return 0
        for name, obj in objects.items():
            obj.load_state_dict(state[name])
        print(f"resuming from {self.path} at step {state['step']}")
        return state["step"]

    def save(self, objects: dict[str, Stateful], step: int) -> None:
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save({"fingerprint": self.fingerprint, "step": step,
                    **{name: obj.state_dict() for name, obj in objects.items()}}, tmp)
        tmp.replace(self.path)


def step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


def seeded_normal(seeds, shape: tuple[int, ...]) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per seed, stacked: item i depends on seed i only."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s) % 2**63))
                        for s in seeds])
