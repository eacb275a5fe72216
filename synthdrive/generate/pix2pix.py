"""Pix2Pix (Isola et al. 2017): a mask-to-image baseline for the generator comparison.

Generator: U-Net with skip connections on the one-hot layout and the condition embedding
(4x4 stride-2 convs down; nearest upsampling + 3x3 conv up, since transposed convs left a
checkerboard in the calibration, shared/notes/generators.md). Pix2Pix's noise is dropout alone,
which the paper reports the generator learns to ignore; here dropout stays a training-time
regulariser (the innermost decoder levels, p = ``dropout``) and sampling varies an explicit
latent instead, so samples are a function of their seed. The latent and the condition reach
every decoder level through instance-norm scale/shift (a global brightness shift survives the
norms that way). Discriminator: the 70x70 PatchGAN (spade_gan.PatchDiscriminator with
``d_layers: 4`` and one scale). Losses: the paper's BCE GAN loss + ``l1_weight`` (100) x L1
(+ ``perceptual_weight`` x the EfficientNet-Lite perceptual L1, generate/perceptual.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from synthdrive.conditions import TIMES_OF_DAY, WEATHERS
from synthdrive.errors import UserError
from synthdrive.generate import EvalCallback, StepCallback, blocks
from synthdrive.generate.data import TrainData
from synthdrive.generate.perceptual import add as add_perceptual
from synthdrive.generate.perceptual import build as build_perceptual
from synthdrive.generate.spade_gan import adversarial_setup
from synthdrive.generate.training import distributed, step_normal, train_loop


class StyleNorm(nn.Module):
    """Instance norm whose scale and shift come from the (condition, latent) vector."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(style)[:, :, None, None].chunk(2, 1)
        return self.norm(x) * (1 + gamma) + beta


class UpBlock(nn.Module):
    def __init__(self, fin: int, fout: int, style_dim: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(fin, fout, 3, padding=1)
        self.norm = StyleNorm(fout, style_dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")), style)
        return F.dropout(F.relu(x), self.dropout, self.training)


class UNetGenerator(ModelMixin, ConfigMixin):
    """(one-hot layout, weather id, time id, latent) -> image in [-1, 1]."""

    @register_to_config
    def __init__(self, num_classes: int, channels: Sequence[int] = (64, 128, 256, 256),
                 z_dim: int = 16, cond_dim: int = 16, dropout: float = 0.5, dropout_levels: int = 2):
        super().__init__()
        self.weather_embed = nn.Embedding(len(WEATHERS) + 1, cond_dim)
        self.time_embed = nn.Embedding(len(TIMES_OF_DAY) + 1, cond_dim)
        style_dim = 2 * cond_dim + z_dim
        self.down = nn.ModuleList()
        cin = num_classes + 1 + 2 * cond_dim
        for level, cout in enumerate(channels):
            # No norm on the outermost and innermost encoder layers (as in Pix2Pix).
            norm = nn.InstanceNorm2d(cout) if 0 < level < len(channels) - 1 else nn.Identity()
            self.down.append(nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), norm,
                                           nn.LeakyReLU(0.2)))
            cin = cout
        self.up = nn.ModuleList()
        for level in reversed(range(1, len(channels))):  # back up to half resolution
            drop = dropout if len(channels) - 1 - level < dropout_levels else 0.0
            self.up.append(UpBlock(cin, channels[level - 1], style_dim, drop))
            cin = 2 * channels[level - 1]  # + the skip from the encoder
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, seg: torch.Tensor, weather: torch.Tensor, time: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        levels = len(self.down)
        if seg.shape[-2] % 2 ** levels or seg.shape[-1] % 2 ** levels:
            raise UserError(f"generator size {tuple(seg.shape[-2:])} must be divisible by 2^{levels} "
                            f"(len(generator.pix2pix.channels))")
        cond = torch.cat([self.weather_embed(weather), self.time_embed(time)], 1)
        x = torch.cat([seg, cond[:, :, None, None].expand(-1, -1, *seg.shape[-2:])], 1)
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        style = torch.cat([cond, z], 1)
        skips.pop()
        for up in self.up:
            x = torch.cat([up(x, style), skips.pop()], 1)
        return torch.tanh(self.conv_out(F.interpolate(x, scale_factor=2, mode="nearest")))


class Pix2Pix(blocks.LatentNetGenerator):
    backend = "pix2pix"
    NET = UNetGenerator

    def train(self, data: TrainData, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        g = self.cfg["pix2pix"]
        disc, opt_g, opt_d, objects = adversarial_setup(self, data, scales=1)
        perceptual = build_perceptual(g)  # None when perceptual_weight is 0
        bce = F.binary_cross_entropy_with_logits
        with distributed() as dist:
            net_g, net_d = dist.wrap(self.net), dist.wrap(disc)  # DDP with several processes

            def step_fn(rng, seg, weather, time, real) -> dict:
                z = step_normal(rng, len(seg), (self.net.config.z_dim,))
                torch.manual_seed(int(rng.integers(0, 2**62)))  # dropout masks: by (seed, step, rank)
                fake = net_g(seg, weather, time, z)

                disc.requires_grad_(False)
                logits_fake = net_d(seg, weather, time, fake)[0][-1]
                disc.requires_grad_(True)
                adv = bce(logits_fake, torch.ones_like(logits_fake))
                l1 = F.l1_loss(fake, real)
                loss_g, extra = add_perceptual(perceptual, adv + g["l1_weight"] * l1, fake, real,
                                               "loss_g_perceptual")
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()

                logits_real = net_d(seg, weather, time, real)[0][-1]
                logits_fake = net_d(seg, weather, time, fake.detach())[0][-1]
                # Halved as in the paper: D learns at half G's rate.
                loss_d = 0.5 * (bce(logits_real, torch.ones_like(logits_real))
                                + bce(logits_fake, torch.zeros_like(logits_fake)))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                return {"loss_g": loss_g.item(), "loss_g_adv": adv.item(), "loss_g_l1": l1.item(),
                        "loss_d": loss_d.item(), **extra}

            train_loop(self, data, checkpoint_dir, objects, step_fn, dist, on_step, on_eval)


GENERATOR = Pix2Pix
