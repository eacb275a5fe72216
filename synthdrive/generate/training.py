"""Resumable training shared by the in-project backends: a checkpoint holds every stateful
object (nets, optimizers, EMA) and the step; batches and noise are a function of (seed, step),
so a resumed run replays exactly what an uninterrupted one would have done. Under torchrun
(generator.nproc > 1) the same loop runs data-parallel: see ``Distributed``."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
import torch.distributed as torch_dist
from diffusers.training_utils import EMAModel
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from synthdrive.codehash import code_fingerprint
from synthdrive.compute import rank_device
from synthdrive.errors import UserError
from synthdrive.generate.data import TrainData

# Settings that only say how long or how often: changing them keeps a checkpoint resumable
# (raising iterations continues training from the last checkpoint).
CADENCE = {"iterations", "sample_every", "checkpoint_every", "resume", "eval_frames", "diversity_seeds"}


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict): ...


def fingerprint(cfg: dict, backend: str, data: TrainData) -> str:
    """What a checkpoint must match to be resumed: the backend's settings but cadence, the
    shared ones (size, seed), and the training frames: their ids, conditions and pixels (a
    re-rendered dataset keeps its ids)."""
    shared = {k: v for k, v in cfg.items() if not isinstance(v, dict) and k not in CADENCE}  # incl. nproc: the global batch
    own = {k: v for k, v in cfg[backend].items() if k not in CADENCE}
    blob = json.dumps([backend, shared, own, data.ids, data.num_classes, [str(c) for c in data.conditions]],
                      sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode())
    for tensor in (data.images, data.layouts):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Checkpoint:
    """``<dir>/<backend>.pt``: resumed when it is the same training: its fingerprint (settings
    and data) and its code fingerprint (``synthdrive.codehash``: the backend's module and this
    one with everything they import) match, and it is not past the end. Raising ``iterations``
    on the same code, settings and data continues from it; any other mismatch trains from step
    0 and says why in one line."""

    def __init__(self, directory: Path | None, backend: str, fingerprint: str, enabled: bool = True):
        self.path = Path(directory) / f"{backend}.pt" if directory else None
        self.fingerprint, self.enabled, self.backend = fingerprint, enabled, backend
        self.code = code_fingerprint(f"synthdrive.generate.{backend}", __name__) if self.path else None

    def load(self) -> dict:
        """The checkpoint's contents (``torch.load(weights_only=True)``); an unreadable file is
        a one-line UserError naming it and the fix."""
        try:
            state = torch.load(self.path, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
            # torch's first sentence only: the rest is multi-line, and suggests weights_only=False
            first = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")[:120]
            reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
            raise UserError(f"{self.path}: unreadable generator checkpoint ({reason}); delete it, or set "
                            f"generator.resume: false to train from step 0 and overwrite it") from None
        if not isinstance(state, dict) or not {"fingerprint", "step"} <= state.keys():
            raise UserError(f"{self.path}: not a generator checkpoint (no fingerprint/step); delete it, or "
                            f"set generator.resume: false to train from step 0 and overwrite it")
        return state

    def resume(self, objects: dict[str, Stateful], iterations: int) -> tuple[int, float]:
        """Load ``objects`` from the checkpoint; the step to start from (0 = fresh) and the
        training seconds already spent to reach it."""
        if not (self.enabled and self.path and self.path.is_file()):
            return 0, 0.0
        state = self.load()
        if state["fingerprint"] != self.fingerprint:
            print(f"resume: settings or training data changed since the checkpoint {self.path}; "
                  f"training from step 0")
            return 0, 0.0
        if state.get("code") != self.code:
            print(f"resume: code changed since the checkpoint {self.path}; training from step 0")
            return 0, 0.0
        if state["step"] > iterations:
            print(f"resume: the checkpoint {self.path} is at step {state['step']}, past "
                  f"generator.{self.backend}.iterations = {iterations}; training from step 0")
            return 0, 0.0
        for name, obj in objects.items():
            obj.load_state_dict(state[name])
        print(f"resuming from {self.path} at step {state['step']}")
        return state["step"], float(state.get("train_seconds", 0.0))

    def save(self, objects: dict[str, Stateful], step: int, train_seconds: float = 0.0) -> None:
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save({"fingerprint": self.fingerprint, "code": self.code, "step": step,
                    "train_seconds": train_seconds,
                    **{name: obj.state_dict() for name, obj in objects.items()}}, tmp)
        tmp.replace(self.path)


def step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


def seeded_normal(seeds, shape: tuple[int, ...]) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per seed, stacked: item i depends on seed i only."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s) % 2**63))
                        for s in seeds])


def step_normal(rng: np.random.Generator, batch_size: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Training noise: ``seeded_normal`` with one seed per item drawn from the step's stream, so a
    resumed run replays it."""
    return seeded_normal(rng.integers(0, 2**62, batch_size), shape)


class Distributed:
    """This process's place in a torchrun launch; with one process (no WORLD_SIZE) every method
    is the identity, so single-process training is bit-for-bit what it was.

    Plain torch DDP under torchrun, as the segmenter's path (mmengine) does, rather than accelerate:
    one launcher for both stages, and the backends keep their own loops, optimizers and (seed,
    step) streams. The nets a step trains are wrapped with ``wrap`` (DistributedDataParallel
    averages their gradients across ranks in backward; its construction broadcasts rank 0's
    weights); everything else stays the single-process code. Each rank draws its own shard of a step's batch from ``rng(seed, step)``
    = rng([seed, step, rank]); ``batch_size`` is per process, so the global batch is
    world_size x batch_size. Identical gradients + identical optimizer and EMA states keep every
    rank's weights (and EMA) identical, so each rank updates its EMA itself (no extra traffic)
    and ``max_difference`` checks the claim at the end. Only rank 0 (``is_main``) writes
    checkpoints and runs the callbacks; every rank resumes from the same checkpoint.
    GAN steps call the discriminator several times per backward (frozen for G's loss, then on
    real and detached fake): DDP allows it because each backward still gives every parameter of
    a wrapped net its gradient exactly once, or none at all (D in G's backward).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | None = None):
        self.rank, self.world_size = rank, world_size
        self.device = device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` for the forward passes that train it: DDP-wrapped with several processes.
        Checkpoints, EMA and sampling keep using the bare module (same parameters)."""
        if self.world_size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)

    def rng(self, seed: int, step: int) -> np.random.Generator:
        """This rank's stream for ``step``: its shard of the batch, flips and noise."""
        if self.world_size == 1:
            return step_rng(seed, step)
        return np.random.default_rng([seed, step, self.rank])

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-rank scalars (losses) averaged over the ranks: the global batch's means."""
        if self.world_size == 1 or not values:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t)
        return dict(zip(values, (t / self.world_size).tolist()))

    def max_difference(self, modules: list[torch.nn.Module]) -> float:
        """Largest |weight - rank 0's weight| over the modules' floating-point state and all
        ranks (0.0 with one process): the proof that the ranks trained one model."""
        if self.world_size == 1:
            return 0.0
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64)
                          for m in modules for t in m.state_dict().values() if t.is_floating_point()])
        reference = flat.clone()
        torch_dist.broadcast(reference, src=0)
        diff = (flat - reference).abs().max().reshape(1)
        torch_dist.all_reduce(diff, op=torch_dist.ReduceOp.MAX)
        return float(diff.item())


@contextlib.contextmanager
def distributed(device: torch.device | None = None) -> Iterator[Distributed]:
    """The process group for one training under torchrun (env RANK / WORLD_SIZE / LOCAL_RANK):
    nccl when the nets are on CUDA, else gloo; a plain ``Distributed()`` without WORLD_SIZE > 1.
    A group this opened is closed on exit (training is the only collective work)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Distributed()
        return
    device = rank_device(device or torch.device("cpu"))
    opened = not torch_dist.is_initialized()
    if opened:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Distributed(torch_dist.get_rank(), torch_dist.get_world_size(), device)
    finally:
        if opened:
            torch_dist.destroy_process_group()


def train_loop(generator, data: TrainData, checkpoint_dir: Path | None, objects: dict[str, Stateful],
               step_fn: Callable[..., dict], dist: Distributed, on_step=None, on_eval=None,
               net: torch.nn.Module | None = None) -> None:
    """The loop every in-project backend shares, with the setup that goes with it: the EMA of
    ``net`` (default ``generator.net``: the net that samples), the checkpoint of ``objects`` (the
    backend's nets and optimizers) plus that EMA, and resuming from it. Each step draws the
    batch from the step's stream and calls ``step_fn(rng, seg, weather, time, image) -> losses``
    (the backend's update; ``rng`` goes on to its noise), so a batch and its noise are a function
    of (seed, step, rank) whichever backend trains. Checkpoints and the evaluation callback on
    the EMA weights follow the cadence in ``generator.cfg``; it ends with the EMA weights in
    ``net`` and ``generator.train_seconds`` = optimisation time over every session that trained
    this checkpoint (the callbacks' time excluded), so a resumed run reports the whole training's
    cost. With ``dist`` over several processes, losses are averaged over the ranks, only rank 0
    checkpoints and calls back, and ``generator.rank_max_difference`` records
    ``dist.max_difference`` of the trained nets (after the EMA copy)."""
    cfg, backend = generator.cfg, generator.backend
    own = cfg[backend]
    net = generator.net if net is None else net
    if data.num_classes != net.config.num_classes:
        raise UserError(f"training data has {data.num_classes} classes but the generator "
                        f"{net.config.num_classes}; check labels.space")
    ema = EMAModel(net.parameters(), decay=own["ema_decay"], use_ema_warmup=True)
    state = {**objects, "ema": ema}
    ckpt = Checkpoint(checkpoint_dir, backend, fingerprint(cfg, backend, data), enabled=cfg.get("resume", True))
    iterations = own["iterations"]
    start, seconds = ckpt.resume(state, iterations)
    device = next(net.parameters()).device
    ema.to(device)
    for obj in state.values():
        if isinstance(obj, torch.nn.Module):
            obj.train()
    for step in tqdm(range(start, iterations), desc=f"train {backend}", initial=start,
                     total=iterations, disable=not dist.is_main):
        started = time.perf_counter()
        rng = dist.rng(cfg["seed"], step)
        batch = (t.to(device) for t in data.draw(rng, own["batch_size"]))
        losses = dist.mean(step_fn(rng, *batch))
        ema.step(net.parameters())
        seconds += time.perf_counter() - started
        done = step + 1
        if not dist.is_main:
            continue
        if on_step:
            on_step(done, losses)
        if done % cfg["checkpoint_every"] == 0 or done == iterations:
            ckpt.save(state, done, seconds)
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
    generator.trained_steps, generator.train_seconds = iterations, seconds
    generator.world_size = dist.world_size
    generator.rank_max_difference = dist.max_difference(
        [obj for obj in state.values() if isinstance(obj, torch.nn.Module)])
