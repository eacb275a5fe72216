"""Stable Diffusion + seg ControlNet (SynDiff-AD's generator), from local weight folders.

The layout is drawn in the ADE20K palette (label_spaces.yaml: ade20k), which is what the seg
ControlNet was trained on; the prompt is the retargeted caption (synthdrive.synthesize). Sampling
is diffusers' StableDiffusionControlNetPipeline with a DDIMScheduler; SynDiff-AD's settings
(50 steps, guidance 9) are the defaults. Nothing is trained and nothing is downloaded:
``generator.controlnet.base_model_dir`` (a Stable Diffusion pipeline folder, model_index.json)
and ``generator.controlnet.controlnet_dir`` (a ControlNetModel folder) must exist locally, with
their weight files (checked when the generator is created, before anything is written).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synthdrive import labels
from synthdrive.conditions import Condition
from synthdrive.compute import resolve_device
from synthdrive.generate import EvalCallback, Generator, StepCallback, write_manifest
from synthdrive.params import Params
from synthdrive.weights import check_all, check_model_folder, check_pipeline_folder

PALETTE_SPACE = "ade20k"
# Components the pipeline is given instead of loading them from base_model_dir.
REPLACED = ("controlnet", "safety_checker", "feature_extractor")
HINT = "save the weights locally (save_pretrained) and set this param to that folder"


def check_weights(param: str, value: str | None) -> Path:
    """The local weights folder named by ``generator.controlnet.<param>``, or a UserError."""
    name = f"generator.controlnet.{param}"
    if param == "base_model_dir":
        return check_pipeline_folder(value, name, HINT, skip=REPLACED)
    return check_model_folder(value, name, HINT)


def check_folders(base_model_dir: str | None, controlnet_dir: str | None) -> tuple[Path, Path]:
    """Both weight folders, checked before anything is built or written; one line for all problems."""
    base, controlnet = check_all(lambda: check_weights("base_model_dir", base_model_dir),
                                 lambda: check_weights("controlnet_dir", controlnet_dir))
    return base, controlnet


def ade20k_layout(layout: np.ndarray, space: str) -> np.ndarray:
    """(H, W) ids in ``space`` -> (H, W, 3) uint8 drawing in the ADE20K palette."""
    return labels.colorize(labels.convert(layout, space, PALETTE_SPACE), PALETTE_SPACE)


class ControlNetSD(Generator):
    backend = "controlnet"

    def __init__(self, label_space: str, size: tuple[int, int], base_model_dir: Path,
                 controlnet_dir: Path, device: str = "auto"):
        self.label_space, self.size = label_space, size
        self.base_model_dir, self.controlnet_dir = base_model_dir, controlnet_dir
        self.device_name = device
        self._pipe = None

    @classmethod
    def create(cls, cfg: Params, label_space: str) -> "ControlNetSD":
        c = cfg["controlnet"]
        return cls(label_space, (c["height"], c["width"]), *check_folders(c["base_model_dir"], c["controlnet_dir"]),
                   c["device"])

    def train(self, data, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        """Pretrained: nothing to train."""

    @property
    def pipe(self):
        if self._pipe is None:
            from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline

            device = resolve_device(self.device_name, "generator.controlnet.device")
            dtype = torch.float16 if device.type == "cuda" else torch.float32
            controlnet = ControlNetModel.from_pretrained(self.controlnet_dir, dtype=dtype,
                                                         local_files_only=True)
            pipe = StableDiffusionControlNetPipeline.from_pretrained(
                self.base_model_dir, controlnet=controlnet, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False, dtype=dtype, local_files_only=True)
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(device)
        return self._pipe

    @torch.no_grad()
    def sample(self, layouts: np.ndarray, conditions: Sequence[Condition], seeds: Sequence[int],
               prompts: Sequence[str] | None = None, batch_size: int = 4, steps: int = 50,
               guidance: float = 9.0, conditioning_scale: float = 1.0, negative_prompt: str = "",
               eta: float = 0.0, **_sampler) -> np.ndarray:
        from PIL import Image

        if prompts is None:
            prompts = [f"A street scene, {c.weather} weather, {c.time_of_day}." for c in conditions]
        out = []
        for i in range(0, len(layouts), batch_size):
            control = [Image.fromarray(ade20k_layout(lay, self.label_space)) for lay in layouts[i:i + batch_size]]
            batch_prompts = list(prompts[i:i + batch_size])
            result = self.pipe(
                prompt=batch_prompts, image=control, height=self.size[0], width=self.size[1],
                num_inference_steps=steps, guidance_scale=guidance,
                controlnet_conditioning_scale=conditioning_scale, eta=eta,
                negative_prompt=[negative_prompt] * len(batch_prompts) if negative_prompt else None,
                generator=[torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch_size]],
                output_type="np")
            out.append((np.clip(result.images, 0, 1) * 255).round().astype(np.uint8))
        return np.concatenate(out)

    def save(self, path: Path) -> None:
        write_manifest(Path(path), self.backend, label_space=self.label_space, height=self.size[0],
                       width=self.size[1], base_model_dir=str(self.base_model_dir),
                       controlnet_dir=str(self.controlnet_dir), device=self.device_name)

    @classmethod
    def load(cls, path: Path, manifest: dict) -> "ControlNetSD":
        return cls(manifest["label_space"], (manifest["height"], manifest["width"]),
                   *check_folders(manifest["base_model_dir"], manifest["controlnet_dir"]), manifest["device"])


GENERATOR = ControlNetSD
