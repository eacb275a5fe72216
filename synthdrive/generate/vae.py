"""Layout- and condition-conditioned VAE: the small-data baseline of the generator comparison.

Encoder q(z | image, layout, condition): strided convs on the image, the one-hot layout and the
one-hot condition, pooled to the mean and log-variance of a ``z_dim`` latent. Decoder
p(image | z, layout, condition): the SPADE decoder of spade_gan (the layout and condition
modulate every scale, z starts it), so the comparison with spade_gan isolates the objective:
L1 reconstruction + ``kl_weight`` x KL(q || N(0, I)) (+ ``perceptual_weight`` x the
EfficientNet-Lite perceptual L1, generate/perceptual.py) instead of the adversarial losses. Sampling
draws z from N(0, I) by each item's seed (spade_gan's sampling, save and load).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.training_utils import EMAModel

from synthdrive.conditions import TIMES_OF_DAY, WEATHERS
from synthdrive.generate import EvalCallback, StepCallback
from synthdrive.generate.data import TrainData
from synthdrive.generate.perceptual import build as build_perceptual
from synthdrive.generate.spade_gan import SPADEGenerator, SpadeGAN, _num_classes
from synthdrive.generate.training import Checkpoint, distributed, fingerprint, seeded_normal, train_loop
from synthdrive.params import Params


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


class LayoutVAE(SpadeGAN):
    backend = "vae"

    @classmethod
    def create(cls, cfg: Params, label_space: str) -> "LayoutVAE":
        torch.manual_seed(cfg["seed"])
        v = cfg["vae"]
        net = SPADEGenerator(num_classes=_num_classes(label_space), channels=list(v["channels"]),
                             spade_hidden=v["spade_hidden"], z_dim=v["z_dim"], cond_dim=v["cond_dim"])
        return cls(net, label_space, (cfg["height"], cfg["width"]), cfg.to_dict())

    def train(self, data: TrainData, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        cfg, v = self.cfg, self.cfg["vae"]
        self.check_classes(data)
        seed, batch_size = cfg["seed"], v["batch_size"]
        torch.manual_seed(seed + 1)
        encoder = VAEEncoder(num_classes=data.num_classes, channels=list(v["encoder_channels"]),
                             z_dim=self.net.config.z_dim)
        opt = torch.optim.Adam([*self.net.parameters(), *encoder.parameters()], lr=v["lr"])
        ema = EMAModel(self.net.parameters(), decay=v["ema_decay"], use_ema_warmup=True)
        ckpt = Checkpoint(checkpoint_dir, self.backend, fingerprint(cfg, self.backend, data),
                          enabled=cfg.get("resume", True))
        state = {"decoder": self.net, "encoder": encoder, "opt": opt, "ema": ema}
        perceptual = build_perceptual(v)  # None when perceptual_weight is 0

        with distributed() as dist:
            net_dec, net_enc = dist.wrap(self.net), dist.wrap(encoder)  # DDP with several processes

            def step_fn(step: int) -> dict:
                rng = dist.rng(seed, step)
                index = rng.integers(0, len(data), batch_size)
                seg, weather, time, real = data.batch(index, rng.random(batch_size) < 0.5)
                mean, logvar = net_enc(seg, weather, time, real)
                eps = seeded_normal(rng.integers(0, 2**62, batch_size), (self.net.config.z_dim,))
                fake = net_dec(seg, weather, time, mean + eps * (0.5 * logvar).exp())
                recon = F.l1_loss(fake, real)
                # KL summed over the latent, batch-averaged; kl_weight sets it against the per-pixel L1.
                kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
                loss = recon + v["kl_weight"] * kl
                extra = {}
                if perceptual is not None:
                    percept = perceptual(fake, real)
                    loss = loss + perceptual.weight * percept
                    extra["loss_perceptual"] = percept.item()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return {"loss": loss.item(), "loss_l1": recon.item(), "kl": kl.item(), **extra}

            train_loop(self, ema, state, ckpt, v["iterations"], cfg, step_fn, on_step, on_eval, dist)


GENERATOR = LayoutVAE
