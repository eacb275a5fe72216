"""SPADE-GAN (Park et al. 2019), sized for CPU training: the pipeline's default generator.

Generator: the downsampled one-hot layout + noise start a residual decoder; every block is
normalised without batch statistics (instance norm, so one sample never depends on another in
its batch) and re-modulated by SPADE from the layout and the condition embedding at its own
scale; upsampling is nearest + conv (transposed convs left a checkerboard in the calibration).
Discriminator: multi-scale spectral-norm PatchGAN on (layout, condition, image).
Losses: hinge + discriminator feature matching + L1 to the real image (the calibration's recipe,
shared/notes/generators.md: it makes a few hundred CPU iterations enough), and with
``perceptual_weight`` > 0 an EfficientNet-Lite perceptual L1 (generate/perceptual.py; pix2pix and
vae take it too). Adam with TTUR, EMA of
the generator (diffusers' EMAModel), resumable checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.nn.utils.parametrizations import spectral_norm

from synthdrive.conditions import TIMES_OF_DAY, WEATHERS
from synthdrive.errors import UserError
from synthdrive.generate import EvalCallback, StepCallback, blocks
from synthdrive.generate.data import TrainData
from synthdrive.generate.perceptual import add as add_perceptual
from synthdrive.generate.perceptual import build as build_perceptual
from synthdrive.generate.training import distributed, step_normal, train_loop


class SPADE(nn.Module):
    """Parameter-free instance norm, then a per-pixel scale and shift predicted from the
    block's shared layout+condition features."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * (1 + self.gamma(features)) + self.beta(features)


class SPADEResBlock(nn.Module):
    """SPADE residual block. One layout-feature conv per block feeds both SPADE norms (the
    paper has one per norm; sharing it halves the cost at full resolution)."""

    def __init__(self, fin: int, fout: int, seg_channels: int, hidden: int):
        super().__init__()
        mid = min(fin, fout)
        self.shared = nn.Sequential(nn.Conv2d(seg_channels, hidden, 3, padding=1), nn.ReLU())
        self.norm_0, self.conv_0 = SPADE(fin, hidden), nn.Conv2d(fin, mid, 3, padding=1)
        self.norm_1, self.conv_1 = SPADE(mid, hidden), nn.Conv2d(mid, fout, 3, padding=1)
        self.shortcut = nn.Conv2d(fin, fout, 1, bias=False) if fin != fout else nn.Identity()

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        features = self.shared(seg)
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, features), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, features), 0.2))
        return self.shortcut(x) + dx


class SPADEGenerator(ModelMixin, ConfigMixin):
    """(one-hot layout, weather id, time id, noise) -> image in [-1, 1]."""

    @register_to_config
    def __init__(self, num_classes: int, channels: Sequence[int] = (256, 128, 128, 64, 32),
                 spade_hidden: int = 64, z_dim: int = 64, cond_dim: int = 16):
        super().__init__()
        seg_channels = num_classes + 1 + 2 * cond_dim
        self.weather_embed = nn.Embedding(len(WEATHERS) + 1, cond_dim)
        self.time_embed = nn.Embedding(len(TIMES_OF_DAY) + 1, cond_dim)
        self.conv_in = nn.Conv2d(seg_channels + z_dim, channels[0], 3, padding=1)
        self.head = SPADEResBlock(channels[0], channels[0], seg_channels, min(spade_hidden, channels[0]))
        self.blocks = nn.ModuleList(
            SPADEResBlock(cin, cout, seg_channels, min(spade_hidden, cout))
            for cin, cout in zip(channels[:-1], channels[1:]))
        self.conv_out = nn.Conv2d(channels[-1], 3, 3, padding=1)

    @property
    def levels(self) -> int:
        return len(self.blocks)

    def forward(self, seg: torch.Tensor, weather: torch.Tensor, time: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        height, width = seg.shape[-2:]
        if height % 2 ** self.levels or width % 2 ** self.levels:
            raise UserError(f"generator size {height}x{width} must be divisible by "
                            f"2^{self.levels} (len(generator.spade_gan.channels) - 1)")
        cond = torch.cat([self.weather_embed(weather), self.time_embed(time)], 1)

        def layout_at(level: int) -> torch.Tensor:
            size = (height >> (self.levels - level), width >> (self.levels - level))
            # Area pooling keeps thin classes (poles, signs) as fractions instead of dropping them.
            pooled = F.adaptive_avg_pool2d(seg, size)
            return torch.cat([pooled, cond[:, :, None, None].expand(-1, -1, *size)], 1)

        start = layout_at(0)
        x = self.conv_in(torch.cat([start, z[:, :, None, None].expand(-1, -1, *start.shape[-2:])], 1))
        x = self.head(x, start)
        for level, block in enumerate(self.blocks, 1):
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), layout_at(level))
        return torch.tanh(self.conv_out(F.leaky_relu(x, 0.2)))


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """Multi-scale spectral-norm PatchGAN on (layout, condition, image); returns, per scale,
    the intermediate features (for feature matching) with the patch logits last."""

    @register_to_config
    def __init__(self, num_classes: int, channels: int = 32, layers: int = 3, scales: int = 2):
        super().__init__()
        in_channels = num_classes + 1 + len(WEATHERS) + len(TIMES_OF_DAY) + 3

        def one_scale() -> nn.ModuleList:
            convs, cin = [], in_channels
            for i in range(layers):
                cout = channels * 2 ** i
                convs.append(spectral_norm(nn.Conv2d(cin, cout, 4, stride=2 if i < layers - 1 else 1,
                                                     padding=1)))
                cin = cout
            convs.append(spectral_norm(nn.Conv2d(cin, 1, 4, padding=1)))
            return nn.ModuleList(convs)

        self.discriminators = nn.ModuleList(one_scale() for _ in range(scales))

    def forward(self, seg, weather, time, image) -> list[list[torch.Tensor]]:
        cond = torch.cat([F.one_hot(weather, len(WEATHERS)), F.one_hot(time, len(TIMES_OF_DAY))], 1)
        x = torch.cat([seg, cond.float()[:, :, None, None].expand(-1, -1, *seg.shape[-2:]), image], 1)
        outputs = []
        for i, convs in enumerate(self.discriminators):
            h, feats = F.avg_pool2d(x, 2 ** i) if i else x, []
            for conv in convs[:-1]:
                h = F.leaky_relu(conv(h), 0.2)
                feats.append(h)
            feats.append(convs[-1](h))
            outputs.append(feats)
        return outputs


def adversarial_setup(generator, data: TrainData, scales: int):
    """The adversarial half of spade_gan's and pix2pix's training: a PatchGAN discriminator
    (seeded after the generator, so adding it leaves the generator's initial weights alone), an
    Adam per net (lr_g / lr_d: TTUR when they differ), and all of them by checkpoint name."""
    own = generator.cfg[generator.backend]
    torch.manual_seed(generator.cfg["seed"] + 1)
    disc = PatchDiscriminator(num_classes=data.num_classes, channels=own["d_channels"],
                              layers=own["d_layers"], scales=scales)
    betas = tuple(own["betas"])
    opt_g = torch.optim.Adam(generator.net.parameters(), lr=own["lr_g"], betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=own["lr_d"], betas=betas)
    checkpointed = {"generator": generator.net, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d}
    return disc, opt_g, opt_d, checkpointed


class SpadeGAN(blocks.LatentNetGenerator):
    backend = "spade_gan"
    NET = SPADEGenerator

    def train(self, data: TrainData, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        g = self.cfg["spade_gan"]
        disc, opt_g, opt_d, objects = adversarial_setup(self, data, g["d_scales"])
        perceptual = build_perceptual(g)  # None when perceptual_weight is 0
        with distributed() as dist:
            net_g, net_d = dist.wrap(self.net), dist.wrap(disc)  # DDP with several processes

            def step_fn(rng, seg, weather, time, real) -> dict:
                fake = net_g(seg, weather, time, step_normal(rng, len(seg), (self.net.config.z_dim,)))

                disc.requires_grad_(False)
                pred_fake = net_d(seg, weather, time, fake)
                disc.requires_grad_(True)
                pred_real = net_d(seg, weather, time, real)
                adv = -torch.stack([p[-1].mean() for p in pred_fake]).mean()
                fm = torch.stack([F.l1_loss(f, r.detach()) for pf, pr in zip(pred_fake, pred_real)
                                  for f, r in zip(pf[:-1], pr[:-1])]).mean()
                l1 = F.l1_loss(fake, real)
                loss_g, extra = add_perceptual(perceptual, adv + g["fm_weight"] * fm + g["l1_weight"] * l1,
                                               fake, real, "loss_g_perceptual")
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()

                pred_fake_d = net_d(seg, weather, time, fake.detach())
                loss_d = torch.stack([F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean()
                                      for r, f in zip(pred_real, pred_fake_d)]).mean()
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                return {"loss_g": loss_g.item(), "loss_g_adv": adv.item(), "loss_g_fm": fm.item(),
                        "loss_g_l1": l1.item(), "loss_d": loss_d.item(), **extra}

            train_loop(self, data, checkpoint_dir, objects, step_fn, dist, on_step, on_eval)


GENERATOR = SpadeGAN
