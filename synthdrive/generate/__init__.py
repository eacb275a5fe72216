"""Layout-to-image generators behind one interface, chosen by ``generator.backend``.

A generator turns a semantic layout (uint8 class ids in the pipeline's label space, 255 =
ignore) plus a target condition into an RGB image. Backends:

  spade_gan   SPADE residual GAN trained in-project (the CPU default; shared/notes/generators.md:
              a GAN learns layout-faithful scenes in CPU-minutes where diffusion learns nothing)
  sdm         SPADE-conditioned diffusion U-Net (DDPM training, DDIM + classifier-free guidance
              sampling): a GPU backend
  pix2pix     U-Net + 70x70 PatchGAN + L1 x 100 (Isola et al.): a mask-to-image GAN baseline
  vae         layout- and condition-conditioned VAE with the SPADE decoder: the small-data baseline
  controlnet  Stable Diffusion + seg ControlNet from local weight folders; needs no training

Modules are imported lazily so a backend's heavy imports cost nothing when unused. The in-project
backends subclass only ``Generator`` and compose the shared pieces of ``generate.blocks`` (build,
save, load, latent sampling) and ``generate.training`` (the loop, its EMA and checkpoint).
"""
from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from synthdrive.conditions import Condition
from synthdrive.errors import UserError
from synthdrive.params import Params

BACKENDS = {
    "spade_gan": "synthdrive.generate.spade_gan",
    "sdm": "synthdrive.generate.sdm",
    "pix2pix": "synthdrive.generate.pix2pix",
    "vae": "synthdrive.generate.vae",
    "controlnet": "synthdrive.generate.controlnet",
}
MANIFEST = "generator.json"

# on_step(step, losses) after every step; on_eval(step, generator) every ``sample_every`` steps.
StepCallback = Callable[[int, dict], None]
EvalCallback = Callable[[int, "Generator"], None]


class Generator(ABC):
    """What the pipeline needs of a generator: train it, save it, sample from it."""

    backend: str
    label_space: str
    size: tuple[int, int]  # (height, width) it samples at; synthesize resizes to the dataset's
    # What the last train() did (the shared loop, generate.training, fills these in; a pretrained
    # backend that trains nothing keeps the defaults).
    trained_steps: int = 0
    train_seconds: float = 0.0      # optimisation time, summed over resumed sessions
    world_size: int = 1             # torchrun processes that trained it
    rank_max_difference: float = 0.0  # largest parameter difference between ranks after training

    @classmethod
    @abstractmethod
    def create(cls, cfg: Params, label_space: str) -> "Generator":
        """A fresh generator from the ``generator`` params section."""

    @abstractmethod
    def train(self, data, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        """Train on ``data`` (a generate.data.TrainData), resuming from ``checkpoint_dir``."""

    @abstractmethod
    def sample(self, layouts: np.ndarray, conditions: Sequence[Condition], seeds: Sequence[int],
               prompts: Sequence[str] | None = None, **sampler) -> np.ndarray:
        """(B, H, W) uint8 layouts -> (B, H, W, 3) uint8 images; item i depends only on its seed."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the model to ``path`` (a folder), with a generator.json manifest."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, manifest: dict) -> "Generator":
        """Read back what ``save`` wrote."""


def backend_class(name: str) -> type[Generator]:
    return importlib.import_module(BACKENDS[name]).GENERATOR


def create(cfg: Params, label_space: str) -> Generator:
    """A fresh generator of the backend named in ``generator.backend``."""
    return backend_class(cfg.choice("backend", BACKENDS)).create(cfg, label_space)


def write_manifest(path: Path, backend: str, **info) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).write_text(json.dumps({"backend": backend, **info}, indent=2, sort_keys=True))


def load(path: str | Path) -> Generator:
    """The generator saved at ``path`` (models/generator), whatever its backend."""
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise UserError(f"{manifest_file}: missing; train the generator first (dvc repro train_generator)")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("backend") not in BACKENDS:
        raise UserError(f"{manifest_file}: unknown backend {manifest.get('backend')!r}; retrain it")
    return backend_class(manifest["backend"]).load(path, manifest)
