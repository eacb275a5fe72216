"""Stable Diffusion + seg ControlNet (SynDiff-AD's generator), from local weight folders.

The layout is drawn in the ADE20K palette (label_spaces.yaml: ade20k), which is what the seg
ControlNet was trained on; the prompt is the retargeted caption (synthdrive.synthesize). Sampling
is diffusers' StableDiffusionControlNetPipeline with a DDIMScheduler; SynDiff-AD's settings
(50 steps, guidance 9) are the defaults. Nothing is trained and nothing is downloaded:
``generator.controlnet.base_model_dir`` (a Stable Diffusion pipeline folder, model_index.json)
and ``generator.controlnet.controlnet_dir`` (a ControlNetModel folder) must exist locally.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synthdrive import labels
from synthdrive.conditions import Condition
from synthdrive.errors import UserError
from synthdrive.generate import EvalCallback, Generator, StepCallback, write_manifest
from synthdrive.params import Params

PALETTE_SPACE = "ade20k"
WEIGHT_FILES = {"base_model_dir": "model_index.json", "controlnet_dir": "config.json"}


def check_weights(param: str, value: str | None) -> Path:
    """The local weights folder named by ``generator.controlnet.<param>``, or a UserError."""
    marker = WEIGHT_FILES[param]
    if not value or not (Path(value) / marker).is_file():
        raise UserError(f"generator.controlnet.{param}={value!r}: not a folder with {marker}; "
                        f"save the weights locally (save_pretrained) and set this param to that folder")
    return Path(value)


def ade20k_layout(layout: np.ndarray, space: str) -> np.ndarray:
    """(H, W) ids in ``space`` -> (H, W, 3) uint8 drawing in the ADE20K palette."""
    return labels.colorize(labels.convert(layout, space, PALETTE_SPACE), PALETTE_SPACE)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        return cls(label_space, (c["height"], c["width"]), check_weights("base_model_dir", c["base_model_dir"]),
                   check_weights("controlnet_dir", c["controlnet_dir"]), c["device"])

    def train(self, data, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        """Pretrained: nothing to train."""

    @property
    def pipe(self):
        if self._pipe is None:
            from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline

            device = _device(self.device_name)
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
                   check_weights("base_model_dir", manifest["base_model_dir"]),
                   check_weights("controlnet_dir", manifest["controlnet_dir"]), manifest["device"])


GENERATOR = ControlNetSD
