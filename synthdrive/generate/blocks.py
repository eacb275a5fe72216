"""Small pieces the in-project backends compose rather than inherit from each other (diffusers'
practice: each backend subclasses only the ``Generator`` interface and calls these): building a
backend from its params section, saving and loading it with its manifest, and sampling the
latent nets (spade_gan, pix2pix, vae) by seed, and ``LatentNetGenerator``, the one body of those
three (they differ only in their net and their ``train``). Training's shared pieces are in
``training``."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import ModelMixin

from synthdrive.conditions import Condition
from synthdrive.generate import Generator, write_manifest
from synthdrive.generate.data import condition_ids, one_hot, to_uint8
from synthdrive.generate.training import seeded_normal
from synthdrive.labels import get as get_label_space
from synthdrive.params import Params


def create(cls, net_cls: type[ModelMixin], cfg: Params, label_space: str, **extra):
    """A fresh ``cls`` around a ``net_cls`` built under the generator seed from the backend's own
    params section, whose keys are the net's constructor arguments (all but ``num_classes``, the
    label space's size): one path, so every backend's params reach its net the same way."""
    torch.manual_seed(cfg["seed"])
    own = cfg[cls.backend]
    args = {name: copy.deepcopy(own[name]) for name in inspect.signature(net_cls).parameters
            if name != "num_classes"}
    net = net_cls(num_classes=get_label_space(label_space).num_classes, **args)
    return cls(net, label_space, (cfg["height"], cfg["width"]), cfg.to_dict(), **extra)


def save(generator, path: Path, /, **parts) -> None:
    """Each of ``parts`` (name: anything with ``save_pretrained``) in its folder under ``path``,
    and the manifest ``load`` reads back."""
    for name, part in parts.items():
        part.save_pretrained(Path(path) / name)
    write_manifest(Path(path), generator.backend, label_space=generator.label_space,
                   trained_steps=generator.trained_steps, height=generator.size[0], width=generator.size[1])


def load(cls, net_cls: type[ModelMixin], path: Path, manifest: dict, folder: str, **extra):
    """What ``save`` wrote: the net saved as part ``folder``, in eval mode, wrapped as ``cls``."""
    net = net_cls.from_pretrained(Path(path) / folder).eval()
    return cls(net, manifest["label_space"], (manifest["height"], manifest["width"]),
               trained_steps=manifest["trained_steps"], **extra)


@torch.no_grad()
def sample_latent(net: ModelMixin, layouts: np.ndarray, conditions: Sequence[Condition], seeds: Sequence[int],
                  batch_size: int) -> np.ndarray:
    """Images of ``net(one-hot layout, weather, time, z)`` with each item's latent z from its own
    seed, so an item does not depend on its batch mates."""
    net.eval()
    out = []
    for i in range(0, len(layouts), batch_size):
        seg = one_hot(torch.from_numpy(np.asarray(layouts[i:i + batch_size])), net.config.num_classes)
        weather, time = condition_ids(conditions[i:i + batch_size])
        z = seeded_normal(seeds[i:i + batch_size], (net.config.z_dim,))
        out.append(to_uint8(net(seg, weather, time, z)))
    return np.concatenate(out)


class LatentNetGenerator(Generator):
    """A generator whose sampler is one net ``NET(one-hot layout, weather, time, z)`` saved as the
    part ``generator`` (spade_gan, pix2pix, vae): built, sampled, saved and loaded here, so a
    backend of this kind writes only its ``NET`` and its ``train``."""
    NET: type[ModelMixin]

    def __init__(self, net: ModelMixin, label_space: str, size: tuple[int, int],
                 cfg: dict | None = None, trained_steps: int = 0):
        self.net, self.label_space, self.size = net, label_space, size
        self.cfg, self.trained_steps = cfg, trained_steps

    @classmethod
    def create(cls, cfg: Params, label_space: str) -> "LatentNetGenerator":
        return create(cls, cls.NET, cfg, label_space)

    def sample(self, layouts: np.ndarray, conditions: Sequence[Condition], seeds: Sequence[int],
               prompts: Sequence[str] | None = None, batch_size: int = 16, **_sampler) -> np.ndarray:
        return sample_latent(self.net, layouts, conditions, seeds, batch_size)

    def save(self, path: Path) -> None:
        save(self, path, generator=self.net)

    @classmethod
    def load(cls, path: Path, manifest: dict) -> "LatentNetGenerator":
        return load(cls, cls.NET, path, manifest, "generator")
