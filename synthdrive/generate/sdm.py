"""SDM-style semantic diffusion (Wang et al. 2022): a GPU backend.

U-Net with a plain encoder and SPADE-modulated group norms in the middle and decoder blocks
(the layout enters there, at every scale); the condition (weather, time of day) is embedded and
added to the timestep embedding. Trained with diffusers' DDPMScheduler on epsilon, dropping the
layout and the condition together with probability ``uncond_prob`` so one network gives both
terms of classifier-free guidance; sampled with DDIMScheduler (steps, eta, guidance).
Hand-written because diffusers' U-Nets have no SPADE normalisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, DDIMScheduler, DDPMScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps

from synthdrive.conditions import TIMES_OF_DAY, WEATHERS, Condition
from synthdrive.compute import resolve_device
from synthdrive.errors import UserError
from synthdrive.generate import EvalCallback, Generator, StepCallback, blocks
from synthdrive.generate.data import NULL_TIME, NULL_WEATHER, TrainData, condition_ids, one_hot, to_uint8
from synthdrive.generate.training import distributed, step_normal, train_loop
from synthdrive.params import Params


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the time(+condition) embedding added in between; with
    ``seg_channels`` the norms are SPADE (affine-free GroupNorm modulated by the layout)."""

    def __init__(self, fin: int, fout: int, temb: int, groups: int, seg_channels: int = 0,
                 hidden: int = 0):
        super().__init__()
        self.spade = seg_channels > 0
        self.norm_0 = nn.GroupNorm(groups, fin, affine=not self.spade)
        self.conv_0 = nn.Conv2d(fin, fout, 3, padding=1)
        self.temb = nn.Linear(temb, fout)
        self.norm_1 = nn.GroupNorm(groups, fout, affine=not self.spade)
        self.conv_1 = nn.Conv2d(fout, fout, 3, padding=1)
        self.shortcut = nn.Conv2d(fin, fout, 1) if fin != fout else nn.Identity()
        if self.spade:
            self.seg = nn.Sequential(nn.Conv2d(seg_channels, hidden, 3, padding=1), nn.SiLU())
            self.mod_0 = nn.Conv2d(hidden, 2 * fin, 3, padding=1)
            self.mod_1 = nn.Conv2d(hidden, 2 * fout, 3, padding=1)

    def _norm(self, norm, mod, x, features):
        x = norm(x)
        if self.spade:
            gamma, beta = mod(features).chunk(2, 1)
            x = x * (1 + gamma) + beta
        return F.silu(x)

    def forward(self, x, temb, seg=None):
        features = self.seg(F.adaptive_avg_pool2d(seg, x.shape[-2:])) if self.spade else None
        h = self.conv_0(self._norm(self.norm_0, getattr(self, "mod_0", None), x, features))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv_1(self._norm(self.norm_1, getattr(self, "mod_1", None), h, features))
        return self.shortcut(x) + h


class SDMUNet(ModelMixin, ConfigMixin):
    """(noisy image, timestep, one-hot layout, weather id, time id) -> predicted noise."""

    @register_to_config
    def __init__(self, num_classes: int, channels: Sequence[int] = (64, 128, 256),
                 layers_per_block: int = 2, spade_hidden: int = 128, groups: int = 32):
        super().__init__()
        c0, temb = channels[0], 4 * channels[0]
        seg_channels = num_classes + 1
        self.time_proj = Timesteps(c0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(c0, temb)
        self.weather_embedding = nn.Embedding(len(WEATHERS) + 1, temb)
        self.time_of_day_embedding = nn.Embedding(len(TIMES_OF_DAY) + 1, temb)
        self.conv_in = nn.Conv2d(3, c0, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, cin = [c0], c0
        for level, cout in enumerate(channels):
            for _ in range(layers_per_block):
                self.down.append(ResBlock(cin, cout, temb, groups))
                cin = cout
                skips.append(cin)
            if level < len(channels) - 1:
                self.downsample.append(nn.Conv2d(cin, cin, 3, stride=2, padding=1))
                skips.append(cin)
        spade = dict(seg_channels=seg_channels, hidden=spade_hidden)
        self.mid = nn.ModuleList([ResBlock(cin, cin, temb, groups, **spade) for _ in range(2)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, cout in reversed(list(enumerate(channels))):
            for _ in range(layers_per_block + 1):
                self.up.append(ResBlock(cin + skips.pop(), cout, temb, groups, **spade))
                cin = cout
            if level > 0:
                self.upsample.append(nn.Conv2d(cin, cin, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups, cin)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, sample, timestep, seg, weather, time):
        levels = len(self.config.channels)
        if sample.shape[-1] % 2 ** (levels - 1) or sample.shape[-2] % 2 ** (levels - 1):
            raise UserError(f"sdm size {tuple(sample.shape[-2:])} must be divisible by 2^{levels - 1}")
        t = timestep.expand(sample.shape[0]) if timestep.dim() == 0 else timestep
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        temb = temb + self.weather_embedding(weather) + self.time_of_day_embedding(time)
        h = self.conv_in(sample)
        hs, blocks = [h], iter(self.down)
        for level in range(levels):
            for _ in range(self.config.layers_per_block):
                h = next(blocks)(h, temb)
                hs.append(h)
            if level < levels - 1:
                h = self.downsample[level](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, temb, seg)
        blocks = iter(self.up)
        for i, level in enumerate(reversed(range(levels))):
            for _ in range(self.config.layers_per_block + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], 1), temb, seg)
            if level > 0:
                h = self.upsample[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class SDM(Generator):
    backend = "sdm"

    def __init__(self, unet: SDMUNet, label_space: str, size: tuple[int, int], cfg: dict | None = None,
                 trained_steps: int = 0, *, scheduler: DDPMScheduler, device: torch.device):
        self.unet, self.label_space, self.size = unet.to(device), label_space, size
        self.cfg, self.trained_steps = cfg, trained_steps
        self.scheduler, self.device = scheduler, device

    @classmethod
    def create(cls, cfg: Params, label_space: str) -> "SDM":
        s = cfg["sdm"]
        scheduler = DDPMScheduler(num_train_timesteps=s["train_timesteps"], beta_schedule=s["beta_schedule"])
        return blocks.create(cls, SDMUNet, cfg, label_space, scheduler=scheduler,
                             device=resolve_device(s["device"], "generator.sdm.device"))

    def train(self, data: TrainData, checkpoint_dir: Path | None, on_step: StepCallback | None = None,
              on_eval: EvalCallback | None = None) -> None:
        s = self.cfg["sdm"]
        opt = torch.optim.AdamW(self.unet.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        steps = self.scheduler.config.num_train_timesteps
        with distributed(self.device) as dist:
            unet = dist.wrap(self.unet)  # DDP with several processes

            def step_fn(rng, seg, weather, time, x0) -> dict:
                drop = torch.from_numpy(rng.random(len(seg)) < s["uncond_prob"]).to(self.device)
                seg = seg * ~drop[:, None, None, None]
                weather = torch.where(drop, NULL_WEATHER, weather)
                time = torch.where(drop, NULL_TIME, time)
                noise = step_normal(rng, len(seg), tuple(x0.shape[1:])).to(self.device)
                t = torch.from_numpy(rng.integers(0, steps, len(seg))).to(self.device)
                pred = unet(self.scheduler.add_noise(x0, noise, t), t, seg, weather, time)
                loss = F.mse_loss(pred, noise)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return {"loss": loss.item()}

            train_loop(self, data, checkpoint_dir, {"unet": self.unet, "opt": opt}, step_fn, dist,
                       on_step, on_eval, net=self.unet)

    @torch.no_grad()
    def sample(self, layouts: np.ndarray, conditions: Sequence[Condition], seeds: Sequence[int],
               prompts: Sequence[str] | None = None, batch_size: int = 16, steps: int = 50,
               eta: float = 0.0, guidance: float = 1.5, **_sampler) -> np.ndarray:
        self.unet.eval()
        ddim = DDIMScheduler.from_config(self.scheduler.config)
        out = []
        for i in range(0, len(layouts), batch_size):
            seg = one_hot(torch.from_numpy(np.asarray(layouts[i:i + batch_size])),
                          self.unet.config.num_classes).to(self.device)
            weather, time = (t.to(self.device) for t in condition_ids(conditions[i:i + batch_size]))
            # One noise stream per item (its seed), so an item does not depend on its batch.
            streams = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch_size]]
            x = torch.stack([torch.randn(3, *seg.shape[-2:], generator=g) for g in streams]).to(self.device)
            ddim.set_timesteps(steps)
            seg_in = torch.cat([seg, torch.zeros_like(seg)])
            weather_in = torch.cat([weather, torch.full_like(weather, NULL_WEATHER)])
            time_in = torch.cat([time, torch.full_like(time, NULL_TIME)])
            for t in ddim.timesteps:
                eps_cond, eps_uncond = self.unet(torch.cat([x, x]), t.to(self.device), seg_in,
                                                 weather_in, time_in).chunk(2)
                eps = eps_uncond + guidance * (eps_cond - eps_uncond)
                noise = (torch.stack([torch.randn(x.shape[1:], generator=g) for g in streams]).to(self.device)
                         if eta > 0 else None)
                x = ddim.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
            out.append(to_uint8(x.cpu()))
        return np.concatenate(out)

    def save(self, path: Path) -> None:
        blocks.save(self, path, unet=self.unet, scheduler=self.scheduler)

    @classmethod
    def load(cls, path: Path, manifest: dict, device: str = "auto") -> "SDM":
        return blocks.load(cls, SDMUNet, path, manifest, "unet",
                           scheduler=DDPMScheduler.from_pretrained(Path(path) / "scheduler"),
                           device=resolve_device(device, "generator.sdm.device"))


GENERATOR = SDM
