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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.training_utils import EMAModel
from torch.nn.utils.parametrizations import spectral_norm

from synthdrive.conditions import TIMES_OF_DAY, WEATHERS, Condition
from synthdrive.errors import UserError
from synthdrive.generate import EvalCallback, Generator, StepCallback, write_manifest
from synthdrive.generate.data import TrainData, condition_ids, one_hot, to_uint8
from synthdrive.generate.perceptual import build as build_perceptual
from synthdrive.generate.training import Checkpoint, distributed, fingerprint, seeded_normal, train_loop
from synthdrive.labels import get as label_space
from synthdrive.params import Params

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


class SpadeGAN(Generator):
    """Also the base of the backends whose net has the same call signature (pix2pix, vae):
    they share sampling (the latent from each item's seed), save and load."""

    backend = "spade_gan"
    NET: type[ModelMixin] = SPADEGenerator  # the class save_pretrained wrote, for load

    def __init__(self, net: SPADEGenerator, label_space: str, size: tuple[int, int],
                 cfg: dict | None = None, trained_steps: int = 0):
        self.net, self.label_space, self.size = net, label_space, size
        self.cfg, self.trained_steps = cfg, trained_steps

    @classmethod
    def create(cls, cfg: Params, label_space: str) -> "SpadeGAN":
        torch.manual_seed(cfg["seed"])
        g = cfg["spade_gan"]
        net = SPADEGenerator(num_classes=_num_classes(label_space), channels=list(g["channels"]),
                             spade_hidden=g["spade_hidden"], z_dim=g["z_dim"], cond_dim=g["cond_dim"])
        return cls(net, label_space, (cfg["height"], cfg["width"]), cfg.to_dict())

    def train(self, data: TrainData, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        cfg, g = self.cfg, self.cfg["spade_gan"]
        seed, batch_size, iterations = cfg["seed"], g["batch_size"], g["iterations"]
        disc, opt_g, opt_d, ema, ckpt, state = self.adversarial_setup(data, checkpoint_dir, g, g["d_scales"])
        perceptual = build_perceptual(g)  # None when perceptual_weight is 0
        with distributed() as dist:
            net_g, net_d = dist.wrap(self.net), dist.wrap(disc)  # DDP with several processes

            def step_fn(step: int) -> dict:
                # Batch, flips, noise: a function of (seed, step, rank), so a resumed run replays exactly.
                rng = dist.rng(seed, step)
                index = rng.integers(0, len(data), batch_size)
                seg, weather, time, real = data.batch(index, rng.random(batch_size) < 0.5)
                z = seeded_normal(rng.integers(0, 2**62, batch_size), (self.net.config.z_dim,))
                fake = net_g(seg, weather, time, z)

                disc.requires_grad_(False)
                pred_fake = net_d(seg, weather, time, fake)
                disc.requires_grad_(True)
                pred_real = net_d(seg, weather, time, real)
                adv = -torch.stack([p[-1].mean() for p in pred_fake]).mean()
                fm = torch.stack([F.l1_loss(f, r.detach()) for pf, pr in zip(pred_fake, pred_real)
                                  for f, r in zip(pf[:-1], pr[:-1])]).mean()
                l1 = F.l1_loss(fake, real)
                loss_g = adv + g["fm_weight"] * fm + g["l1_weight"] * l1
                extra = {}
                if perceptual is not None:
                    percept = perceptual(fake, real)
                    loss_g = loss_g + perceptual.weight * percept
                    extra["loss_g_perceptual"] = percept.item()
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

            train_loop(self, ema, state, ckpt, iterations, cfg, step_fn, on_step, on_eval, dist)

    def adversarial_setup(self, data: TrainData, checkpoint_dir: Path | None, g: dict, scales: int):
        """What every GAN backend trains with: a PatchGAN discriminator (seeded after the
        generator), an Adam per net (lr_g / lr_d: TTUR when they differ), the generator's EMA and
        the checkpoint of all of them."""
        self.check_classes(data)
        torch.manual_seed(self.cfg["seed"] + 1)
        disc = PatchDiscriminator(num_classes=data.num_classes, channels=g["d_channels"],
                                  layers=g["d_layers"], scales=scales)
        betas = tuple(g["betas"])
        opt_g = torch.optim.Adam(self.net.parameters(), lr=g["lr_g"], betas=betas)
        opt_d = torch.optim.Adam(disc.parameters(), lr=g["lr_d"], betas=betas)
        ema = EMAModel(self.net.parameters(), decay=g["ema_decay"], use_ema_warmup=True)
        ckpt = Checkpoint(checkpoint_dir, self.backend, fingerprint(self.cfg, self.backend, data),
                          enabled=self.cfg.get("resume", True))
        state = {"generator": self.net, "discriminator": disc, "opt_g": opt_g, "opt_d": opt_d, "ema": ema}
        return disc, opt_g, opt_d, ema, ckpt, state

    def check_classes(self, data: TrainData) -> None:
        if data.num_classes != self.net.config.num_classes:
            raise UserError(f"training data has {data.num_classes} classes but the generator "
                            f"{self.net.config.num_classes}; check labels.space")

    @torch.no_grad()
    def sample(self, layouts: np.ndarray, conditions: Sequence[Condition], seeds: Sequence[int],
               prompts: Sequence[str] | None = None, batch_size: int = 16, **_sampler) -> np.ndarray:
        self.net.eval()
        out = []
        for i in range(0, len(layouts), batch_size):
            seg = one_hot(torch.from_numpy(np.asarray(layouts[i:i + batch_size])), self.net.config.num_classes)
            weather, time = condition_ids(conditions[i:i + batch_size])
            z = seeded_normal(seeds[i:i + batch_size], (self.net.config.z_dim,))
            out.append(to_uint8(self.net(seg, weather, time, z)))
        return np.concatenate(out)

    def save(self, path: Path) -> None:
        self.net.save_pretrained(Path(path) / "generator")
        write_manifest(Path(path), self.backend, label_space=self.label_space,
                       trained_steps=self.trained_steps, height=self.size[0], width=self.size[1])

    @classmethod
    def load(cls, path: Path, manifest: dict) -> "SpadeGAN":
        net = cls.NET.from_pretrained(Path(path) / "generator")
        return cls(net.eval(), manifest["label_space"], (manifest["height"], manifest["width"]),
                   trained_steps=manifest["trained_steps"])


def _num_classes(name: str) -> int:
    return label_space(name).num_classes


GENERATOR = SpadeGAN
