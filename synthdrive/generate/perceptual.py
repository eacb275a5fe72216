"""Perceptual loss for the in-project CPU generators (spade_gan, pix2pix, vae): L1 between the
ImageNet-pretrained EfficientNet-Lite's feature maps (synthdrive/pretrained.py ``encoder``) of the
generated and the real image, averaged over several depths.

The feature net is frozen (no parameter takes a gradient) and stays in eval mode (its BatchNorms
use their ImageNet running statistics, never the batch's), whatever ``train()`` its owner calls;
gradients reach the generator through the generated image only. Generator images in [-1, 1] are
mapped to the ImageNet normalisation the weights expect here, in ``normalise`` (and nowhere else).
The net sees the training resolution as is (64x128 by default: stride-4/8/16 maps of 16x32, 8x16,
4x8). Not part of any checkpoint: the weights come from the pip package every time.

Each backend builds it once per training with ``build(own_params)`` (None when its
``perceptual_weight`` is 0: the default, and then nothing is loaded) and adds
``weight x loss(fake, real)`` to its generator loss with ``add``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from synthdrive.pretrained import MEAN, STD, encoder

VARIANT = 0          # EfficientNet-Lite0: the cheapest of the three on a CPU
LAYERS = (1, 2, 3)   # encoder stages at strides 4, 8, 16 (channels 24, 40, 112 for lite0)


class PerceptualLoss(nn.Module):
    """``loss(fake, real)``: mean over ``layers`` of L1(features(fake), features(real)); images
    are N x 3 x H x W in [-1, 1]. ``weight`` is what the backend multiplies it by."""

    def __init__(self, weight: float = 1.0, variant: int = VARIANT, layers: Sequence[int] = LAYERS,
                 pretrained: bool = True):
        super().__init__()
        self.weight, self.layers = float(weight), tuple(layers)
        self.net = encoder(variant, pretrained, out_indices=self.layers).eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.net.eval()  # frozen statistics, always
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] generator images -> ImageNet-normalised net input."""
        return ((images + 1) * 0.5 - self.mean) / self.std

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.net(self.normalise(images))

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self.features(real)
        return torch.stack([F.l1_loss(f, t) for f, t in zip(self.features(fake), targets)]).mean()


def build(own: dict, device: torch.device | None = None) -> PerceptualLoss | None:
    """The perceptual loss a backend's params ask for (``perceptual_weight`` > 0), else None."""
    weight = float(own.get("perceptual_weight", 0.0))
    if weight <= 0:
        return None
    return PerceptualLoss(weight).to(device or torch.device("cpu"))


def add(perceptual: PerceptualLoss | None, loss: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
        name: str) -> tuple[torch.Tensor, dict[str, float]]:
    """``loss`` + weight x the perceptual term and ``{name: term}`` to log; with ``perceptual``
    None (weight 0), ``loss`` and nothing to log."""
    if perceptual is None:
        return loss, {}
    term = perceptual(fake, real)
    return loss + perceptual.weight * term, {name: term.item()}
