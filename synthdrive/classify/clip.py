"""CLIP zero-shot condition classifier (transformers CLIPModel + CLIPProcessor, local weights).

As in SynDiff-AD: one prompt per value of each factor ("An image taken during rainy weather
conditions."), image-text similarities turned into a softmax over each factor's list. The
backend's features are the L2-normalised image embeddings; nothing is fit. Batches come from
synthdrive.classify.map_frames, which shows the progress bar.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synthdrive.classify.base import Classifier
from synthdrive.classify.heuristic import FACTORS
from synthdrive.compute import resolve_device
from synthdrive.dataset import write_json
from synthdrive.errors import UserError
from synthdrive.weights import check_model_folder


def _pooled(output) -> torch.Tensor:
    """get_*_features return a tensor (transformers 4) or a pooled-output object (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipClassifier(Classifier):
    name = "clip"
    needs_fit = False
    model_file = "clip.json"

    def __init__(self, model_dir: str, prompts: dict[str, str], words: dict[str, dict[str, str]],
                 batch_size: int = 16, device: str = "auto"):
        from transformers import CLIPModel, CLIPProcessor

        # Weights before anything else: a folder without them is one line, not a traceback.
        path = check_model_folder(model_dir, "classify.clip.model_dir",
                                  hint="point it at a local CLIP checkpoint saved with save_pretrained "
                                       "(e.g. openai/clip-vit-large-patch14)")
        self.device = resolve_device(device, "classify.clip.device")
        self.model = CLIPModel.from_pretrained(path, weights_only=True).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.model_dir, self.batch_size = model_dir, batch_size
        self.prompts = {}
        for factor, options in FACTORS.items():
            missing = [o for o in options if o not in words.get(factor, {})]
            if missing:
                raise UserError(f"params.yaml: classify.clip.words.{factor} lacks {missing}; "
                                f"give a word for every value of {options}")
            self.prompts[factor] = [prompts[factor].format(words[factor][o]) for o in options]
        with torch.inference_mode():
            self.text = {}
            for factor, texts in self.prompts.items():
                tokens = self.processor(text=texts, return_tensors="pt", padding=True).to(self.device)
                emb = _pooled(self.model.get_text_features(**tokens))
                self.text[factor] = emb / emb.norm(dim=-1, keepdim=True)

    def features(self, images: Sequence[np.ndarray], labels=None) -> np.ndarray:
        """(frames, projection_dim) L2-normalised image embeddings (float32, on the CPU)."""
        rows = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            with torch.inference_mode():
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                emb = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
                rows.append((emb / emb.norm(dim=-1, keepdim=True)).float().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.model.config.projection_dim), np.float32)

    def predict_features(self, x: np.ndarray) -> list[dict]:
        out = []
        scale = self.model.logit_scale.exp()
        dtype = next(iter(self.text.values())).dtype  # the model's (float32 features convert back exactly)
        for start in range(0, len(x), self.batch_size):
            with torch.inference_mode():
                emb = torch.from_numpy(x[start:start + self.batch_size]).to(self.device, dtype)
                probs = {f: (scale * emb @ t.T).softmax(-1).float().cpu().numpy()
                         for f, t in self.text.items()}
            for i in range(len(emb)):
                pred = {"scores": {}}
                for factor, options in FACTORS.items():
                    p = probs[factor][i]
                    pred["scores"][factor] = {o: round(float(v), 4) for o, v in zip(options, p)}
                    pred[factor] = options[int(p.argmax())]
                out.append(pred)
        return out

    def save(self, folder: Path) -> Path:
        """What the predictions came from: the model folder (as the param names it) and the prompts."""
        path = Path(folder) / self.model_file
        write_json(path, {"model_dir": self.model_dir, "prompts": self.prompts})
        return path
