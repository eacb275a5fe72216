"""Sign images from a text-to-image diffusion pipeline loaded from local weights.

This is the seed project's recipe (Z-Image-Turbo prompted "a stop sign on the road" / "a
warning sign on the road") made measurable: any diffusers pipeline folder that
``DiffusionPipeline.from_pretrained`` loads and that takes ``prompt``, ``height``, ``width``,
``num_inference_steps``, ``guidance_scale`` and ``generator`` works (Stable Diffusion, Z-Image).
Whole generated images are centre-cropped square and resized to the crop size: the prompt asks
for a sign scene, not a tight crop, exactly as the seed used them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from synthdrive.params import ParamError, Params
from synthdrive.compute import resolve_device
from synthdrive.weights import check_pipeline_folder


def _resolve(model_dir: str) -> Path:
    """The pipeline folder (relative paths from the repo root), checked to hold its weights."""
    if not model_dir:
        raise ParamError("params.yaml: signs.data.diffusers.model_dir is empty; set it to a local diffusers "
                         "pipeline folder (with model_index.json) or use signs.data.backend: procedural")
    return check_pipeline_folder(model_dir, "signs.data.diffusers.model_dir", error=ParamError,
                                 hint="point it at a pipeline saved with save_pretrained (nothing is downloaded)")


class DiffusersSigns:
    """Generates ``(image, info)`` pairs per class; image i of a split depends only on (seed, split, class, i)."""

    def __init__(self, cfg: Params, size: int, seed: int):
        import torch
        from diffusers import DiffusionPipeline

        self.cfg, self.size, self.seed = cfg, size, seed
        device = resolve_device(cfg["device"], "signs.data.diffusers.device")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.pipe = DiffusionPipeline.from_pretrained(str(_resolve(cfg["model_dir"])), dtype=dtype,
                                                      local_files_only=True)
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device

    def _crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(image[y:y + side, x:x + side])
        return np.asarray(square.resize((self.size, self.size), Image.BICUBIC))

    def images(self, kind: str, count: int, split: str) -> list[tuple[np.ndarray, dict]]:
        import torch

        from synthdrive.signs import CLASSES

        prompt = self.cfg[f"prompts.{kind}"]
        batch = max(1, int(self.cfg["batch"]))
        out = []
        for start in range(0, count, batch):
            n = min(batch, count - start)
            generators = [torch.Generator("cpu").manual_seed(
                int(np.random.SeedSequence([self.seed, ("train", "val").index(split), CLASSES.index(kind),
                                            start + k]).generate_state(1)[0])) for k in range(n)]
            result = self.pipe(prompt=[prompt] * n, height=int(self.cfg["height"]), width=int(self.cfg["width"]),
                               num_inference_steps=int(self.cfg["steps"]), guidance_scale=float(self.cfg["guidance"]),
                               generator=generators, output_type="np")
            for image in result.images:
                image = np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
                out.append((self._crop(image), {"condition": "unknown", "background": "generated",
                                                "style": "diffusers", "prompt": prompt}))
        return out
