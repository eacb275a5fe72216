"""Resumable training shared by the in-project backends: a checkpoint holds every stateful
object (nets, optimizers, EMA) and the step; batches and noise are a function of (seed, step),
so a resumed run replays exactly what an uninterrupted one would have done."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from tqdm import tqdm

from synthdrive.generate.data import TrainData

# Settings that only say how long or how often: changing them keeps a checkpoint resumable
# (raising iterations continues training from the last checkpoint).
CADENCE = {"iterations", "sample_every", "checkpoint_every", "resume", "eval_frames", "diversity_seeds"}


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


def train_loop(generator, ema, state: dict[str, Stateful], ckpt: Checkpoint, iterations: int, cfg: dict,
               step_fn: Callable[[int], dict], on_step=None, on_eval=None) -> None:
    """The loop every GAN/VAE backend shares: resume, ``step_fn(step) -> losses`` (the backend's
    update for that step), EMA of ``generator.net``, checkpoints and the evaluation callback on
    the EMA weights at the cadence in ``cfg``; ends with the EMA weights in ``generator.net``."""
    net = generator.net
    start = ckpt.resume(state, iterations)
    for obj in state.values():
        if isinstance(obj, torch.nn.Module):
            obj.train()
    for step in tqdm(range(start, iterations), desc=f"train {generator.backend}", initial=start,
                     total=iterations):
        losses = step_fn(step)
        ema.step(net.parameters())
        done = step + 1
        if on_step:
            on_step(done, losses)
        if done % cfg["checkpoint_every"] == 0 or done == iterations:
            ckpt.save(state, done)
        if on_eval and (done % cfg["sample_every"] == 0 or done == iterations):
            generator.trained_steps = done
            ema.store(net.parameters())
            ema.copy_to(net.parameters())
            try:
                on_eval(done, generator)
            finally:
                ema.restore(net.parameters())
            net.train()
    ema.copy_to(net.parameters())
    generator.trained_steps = iterations
