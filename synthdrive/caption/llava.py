"""LLaVA captioner (transformers LlavaForConditionalGeneration + AutoProcessor, local weights).

As in SynDiff-AD, the query names the classes the label map holds and asks the model not to
mention weather or time of day, so the condition phrase can be set separately per target.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from synthdrive.compute import resolve_device
from synthdrive.weights import check_model_folder

FALLBACK_PROMPT = "USER: <image>\n{query} ASSISTANT:"


def _quantization(load_in_4bit: bool, device: torch.device):
    """bitsandbytes 4-bit config when asked for and possible; otherwise say why not, once."""
    if not load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        bitsandbytes = None
    if bitsandbytes is None or device.type != "cuda":
        why = "bitsandbytes is not installed" if bitsandbytes is None else "there is no CUDA GPU"
        warnings.warn(f"caption.llava.load_in_4bit: {why}; loading LLaVA in full precision "
                      f"(set load_in_4bit: false to silence this)")
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float16)


class LlavaCaptioner:
    name = "llava"

    def __init__(self, model_dir: str, query: str, max_new_tokens: int = 60,
                 temperature: float = 0.0, batch_size: int = 4, load_in_4bit: bool = False,
                 device: str = "auto", seed: int = 0):
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        # Weights before anything else: a folder without them is one line, not a traceback.
        path = check_model_folder(model_dir, "caption.llava.model_dir",
                                  hint="point it at a local LLaVA checkpoint saved with save_pretrained "
                                       "(e.g. llava-hf/llava-1.5-7b-hf)")
        self.device = resolve_device(device, "caption.llava.device")
        quant = _quantization(load_in_4bit, self.device)
        kwargs = {"quantization_config": quant, "device_map": "auto"} if quant else {}
        if self.device.type == "cuda" and not quant:
            kwargs["dtype"] = torch.float16
        self.model = LlavaForConditionalGeneration.from_pretrained(path, weights_only=True, **kwargs).eval()
        if not quant:
            self.model.to(self.device)
        self.processor = AutoProcessor.from_pretrained(path)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batch generation
        self.query, self.max_new_tokens = query, max_new_tokens
        self.temperature, self.batch_size, self.seed = temperature, batch_size, seed

    def prompt(self, classes: Sequence[str]) -> str:
        names = ", ".join(c.replace("_", " ") for c in classes) or "a street"
        query = self.query.format(classes=names)
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"},
                                                         {"type": "text", "text": query}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return FALLBACK_PROMPT.format(query=query)

    def describe(self, images: Sequence[np.ndarray], classes: Sequence[Sequence[str]]) -> list[str]:
        """One description per image; ``classes`` are the label map's classes, largest first."""
        torch.manual_seed(self.seed)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            prompts = [self.prompt(c) for c in classes[start:start + self.batch_size]]
            inputs = self.processor(images=batch, text=prompts, return_tensors="pt", padding=True)
            inputs = inputs.to(self.model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            sample = self.temperature > 0
            with torch.inference_mode():
                generated = self.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=sample,
                    **({"temperature": self.temperature} if sample else {}))
            new = generated[:, inputs["input_ids"].shape[1]:]
            out += [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        return out
