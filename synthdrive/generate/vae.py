"""Layout- and condition-conditioned VAE: the small-data baseline of the generator comparison.

Encoder q(z | image, layout, condition): strided convs on the image, the one-hot layout and the
one-hot condition, pooled to the mean and log-variance of a ``z_dim`` latent. Decoder
p(image | z, layout, condition): the SPADE decoder of spade_gan (the layout and condition
modulate every scale, z starts it), so the comparison with spade_gan isolates the objective:
L1 reconstruction + ``kl_weight`` x KL(q || N(0, I)) (+ ``perceptual_weight`` x the
EfficientNet-Lite perceptual L1, generate/perceptual.py) instead of the adversarial losses. Sampling
draws z from N(0, I) by each item's seed (generate.blocks, as spade_gan and pix2pix).
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
from synthdrive.generate import EvalCallback, StepCallback, blocks
from synthdrive.generate.data import TrainData
from synthdrive.generate.perceptual import add as add_perceptual
from synthdrive.generate.perceptual import build as build_perceptual
from synthdrive.generate.spade_gan import SPADEGenerator
from synthdrive.generate.training import distributed, step_normal, train_loop


class VAEEncoder(ModelMixin, ConfigMixin):
    """(one-hot layout, weather id, time id, image) -> (mean, log-variance) of the latent."""

    @register_to_config
    def __init__(self, num_classes: int, channels: Sequence[int] = (32, 64, 128, 128), z_dim: int = 64):
        super().__init__()
        convs, cin = [], num_classes + 1 + len(WEATHERS) + len(TIMES_OF_DAY) + 3
        for cout in channels:
            convs += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = cout
        self.convs = nn.Sequential(*convs)
        self.head = nn.Linear(cin, 2 * z_dim)

    def forward(self, seg, weather, time, image) -> tuple[torch.Tensor, torch.Tensor]:
        cond = torch.cat([F.one_hot(weather, len(WEATHERS)), F.one_hot(time, len(TIMES_OF_DAY))], 1)
        x = torch.cat([seg, cond.float()[:, :, None, None].expand(-1, -1, *seg.shape[-2:]), image], 1)
        mean, logvar = self.head(self.convs(x).mean((2, 3))).chunk(2, 1)
        return mean, logvar.clamp(-10, 10)


class LayoutVAE(blocks.LatentNetGenerator):
    backend = "vae"
    NET = SPADEGenerator

    def train(self, data: TrainData, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        v = self.cfg["vae"]
        torch.manual_seed(self.cfg["seed"] + 1)  # after the decoder, as spade_gan's discriminator
        encoder = VAEEncoder(num_classes=data.num_classes, channels=list(v["encoder_channels"]),
                             z_dim=self.net.config.z_dim)
        opt = torch.optim.Adam([*self.net.parameters(), *encoder.parameters()], lr=v["lr"])
        perceptual = build_perceptual(v)  # None when perceptual_weight is 0
        with distributed() as dist:
            net_dec, net_enc = dist.wrap(self.net), dist.wrap(encoder)  # DDP with several processes

            def step_fn(rng, seg, weather, time, real) -> dict:
                mean, logvar = net_enc(seg, weather, time, real)
                eps = step_normal(rng, len(seg), (self.net.config.z_dim,))
                fake = net_dec(seg, weather, time, mean + eps * (0.5 * logvar).exp())
                recon = F.l1_loss(fake, real)
                # KL summed over the latent, batch-averaged; kl_weight sets it against the per-pixel L1.
                kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
                loss, extra = add_perceptual(perceptual, recon + v["kl_weight"] * kl, fake, real,
                                             "loss_perceptual")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return {"loss": loss.item(), "loss_l1": recon.item(), "kl": kl.item(), **extra}

            train_loop(self, data, checkpoint_dir, {"decoder": self.net, "encoder": encoder, "opt": opt},
                       step_fn, dist, on_step, on_eval)


GENERATOR = LayoutVAE
