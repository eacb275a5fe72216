"""Helpers of the classify and caption tests: rendered datasets of known condition and tiny
random-weight CLIP and LLaVA checkpoints built locally (no hub). Stages run in this process with
``workdir.run(stage, overrides, in_process=True)`` (tests/conftest.py).

Tokenizers are byte-level BPE with no merges (one token per byte): a real tokenizer class
with a vocabulary small enough to write out here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from synthdrive import labels
from synthdrive.conditions import all_conditions
from synthdrive.dataset import Dataset, DatasetWriter
from synthdrive.render import render_frame

IMAGE_SIZE, PATCH = 32, 8
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
                 "{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _vision(**extra) -> dict:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH, **extra)


def build_tiny_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=_vision(), projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=_image_processor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_llava(folder: Path) -> Path:
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    specials = ["<pad>", "<s>", "</s>", "<image>"]
    vocab = {t: i for i, t in enumerate(specials + _byte_alphabet())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", additional_special_tokens=["<image>"])
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision()),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                                pad_token_id=0),
        image_token_index=vocab["<image>"], vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    LlavaProcessor(image_processor=_image_processor(), tokenizer=tokenizer, patch_size=PATCH,
                   vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                   num_additional_image_tokens=1).save_pretrained(folder)
    return folder


def write_rendered_dataset(root: Path, per_split: dict[str, int], size=(64, 128),
                           unknown_split: str | None = None) -> Dataset:
    """A camvid11 dataset of rendered frames (conditions cycling), as collect would write it;
    frames of ``unknown_split`` carry no condition, like an unlabelled source."""
    table = labels.lookup("procedural", "camvid11")
    n = 0
    with DatasetWriter(root, "camvid11", source="procedural", height=size[0], width=size[1]) as w:
        for split, count in per_split.items():
            for i in range(count):
                c = all_conditions()[i % 12]
                f = render_frame(n, c, *size)
                hidden = split == unknown_split
                w.add({"id": f"{split}_{i:04d}", "split": split, "source": "procedural", "seed": n,
                       "weather": None if hidden else c.weather,
                       "time_of_day": None if hidden else c.time_of_day,
                       "instances": f.instances}, f.image, table[f.label],
                      np.clip(f.depth * 1000, 0, 65535).astype(np.uint16))
                n += 1
    return Dataset(root)
