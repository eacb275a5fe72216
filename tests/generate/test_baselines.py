"""The pix2pix and vae generator backends at tiny size, the diversity health metric, and both
through the train_generator + synthesize stages (the tiny dataset: tests/conftest.py's `raw`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthdrive import generate
from synthdrive.conditions import Condition
from synthdrive.dataset import Dataset
from synthdrive.generate.floor import diversity
from synthdrive.generate.pix2pix import UNetGenerator
from synthdrive.params import Params
from tests.helpers import GEN_SIZE, gen_params, truth
from tests.helpers import layouts as _layouts

torch.set_num_threads(1)
H, W = GEN_SIZE
BACKENDS = ["pix2pix", "vae"]


def baseline_params(backend: str, **overrides) -> dict:
    """The repo's generator section with ``backend`` selected and shrunk to test size."""
    tiny = {"pix2pix": dict(iterations=4, batch_size=4, channels=[8, 16, 16], z_dim=4, cond_dim=4,
                            d_channels=8, d_layers=2),
            "vae": dict(iterations=4, batch_size=4, channels=[32, 16, 16, 8], spade_hidden=8, z_dim=8,
                        cond_dim=4, encoder_channels=[8, 16])}
    own = {**tiny[backend], **overrides.pop(backend, {})}
    return gen_params(**{"backend": backend, "diversity_seeds": 3, backend: own, **overrides})


@pytest.mark.parametrize("backend", BACKENDS)
def test_trains_saves_and_loads(backend, train_data, raw, tmp_path):
    gen = generate.create(Params(baseline_params(backend)), "camvid11")
    before = {k: v.clone() for k, v in gen.net.state_dict().items()}
    losses = []
    gen.train(train_data, tmp_path / "ckpt", on_step=lambda step, l: losses.append(l))
    assert len(losses) == 4 and gen.trained_steps == 4
    assert all(np.isfinite(v) for l in losses for v in l.values())
    assert any(not torch.equal(before[k], v) for k, v in gen.net.state_dict().items())
    assert (tmp_path / "ckpt" / f"{backend}.pt").is_file()
    gen.save(tmp_path / "g")
    loaded = generate.load(tmp_path / "g")
    assert loaded.backend == backend and loaded.size == (H, W) and loaded.trained_steps == 4
    conds, seeds = [Condition("rain", "night"), Condition("clear", "dusk")], [3, 4]
    np.testing.assert_array_equal(gen.sample(_layouts(raw), conds, seeds),
                                  loaded.sample(_layouts(raw), conds, seeds))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_is_deterministic_by_seed(backend, raw):
    gen = generate.create(Params(baseline_params(backend)), "camvid11")
    layouts, conds = _layouts(raw, 3), [Condition("fog", "day")] * 3
    a = gen.sample(layouts, conds, [1, 2, 3])
    assert a.shape == (3, H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, gen.sample(layouts, conds, [1, 2, 3]))
    alone = gen.sample(layouts[1:2], conds[1:2], [2])[0]  # same seed, other batch mates
    assert np.abs(alone.astype(int) - a[1]).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_resumed_training_replays_an_uninterrupted_run(backend, train_data, tmp_path):
    """Dropout masks (pix2pix) and the reparameterisation noise (vae) are a function of (seed, step)."""
    straight = generate.create(Params(baseline_params(backend)), "camvid11")
    straight.train(train_data, tmp_path / "a")
    generate.create(Params(baseline_params(backend, **{backend: {"iterations": 2}})), "camvid11").train(
        train_data, tmp_path / "b")
    resumed = generate.create(Params(baseline_params(backend)), "camvid11")
    steps = []
    resumed.train(train_data, tmp_path / "b", on_step=lambda step, _: steps.append(step))
    assert steps == [3, 4]
    for key, value in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=0, atol=1e-6)


def test_vae_samples_differ_across_seeds_after_training(train_data, raw):
    gen = generate.create(Params(baseline_params("vae")), "camvid11")
    gen.train(train_data, None)
    layout = _layouts(raw, 1)
    a, b = gen.sample(np.repeat(layout, 2, 0), [Condition("clear", "day")] * 2, [0, 1])
    assert np.abs(a.astype(int) - b).mean() > 0.5


def test_pix2pix_default_discriminator_is_the_70px_patchgan():
    """Receptive field of the default d_layers: 4x4 convs, strides 2,2,2,1 then the 1-channel conv."""
    from synthdrive.generate.spade_gan import PatchDiscriminator

    layers = gen_params()["pix2pix"]["d_layers"]
    disc = PatchDiscriminator(num_classes=11, channels=4, layers=layers, scales=1)
    field = 1
    for conv in reversed(disc.discriminators[0]):
        field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
    assert field == 70


def test_unet_rejects_a_size_its_levels_cannot_halve():
    net = UNetGenerator(num_classes=11, channels=[4, 4, 4], z_dim=2, cond_dim=2)
    seg = torch.zeros(1, 12, 20, 64)
    with pytest.raises(Exception, match="divisible by 2\\^3"):
        net(seg, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.zeros(1, 2))


def test_diversity_is_zero_for_a_generator_that_ignores_its_seed(train_data):
    class Constant:
        def sample(self, layouts, conditions, seeds):
            return np.full((len(layouts), H, W, 3), 7, np.uint8)

    class Noisy:
        def sample(self, layouts, conditions, seeds):
            return np.stack([np.random.default_rng(s).integers(0, 256, (H, W, 3)) for s in seeds]).astype(np.uint8)

    assert diversity(Constant(), train_data, 3, 4) == 0.0
    assert 70 < diversity(Noisy(), train_data, 3, 4) < 100  # E|U - U'| over 0..255 is ~85


@pytest.mark.parametrize("backend", BACKENDS)
def test_stages_train_generator_then_synthesize(backend, workdir, tiny_dataset):
    raw_ds = tiny_dataset(workdir.path / "data" / "raw", conditions_file=True)
    proc = workdir.run("train_generator", {"generator": baseline_params(backend), "classify": {"use": "auto"}})
    assert f"train_generator: {backend}" in proc.stdout
    metrics = json.loads((workdir.path / "metrics" / "train_generator.json").read_text())
    assert metrics["trained_steps"] == 4 and metrics["l1_floor"] > 0 and metrics["train_seconds"] > 0
    assert metrics["diversity_l1"] >= 0
    assert (workdir.path / "metrics" / "generator_diversity.png").is_file()
    assert json.loads((workdir.path / "models" / "generator" / "generator.json").read_text())["backend"] == backend
    if backend == "vae":
        return  # synthesize runs the sampling pix2pix and vae share (blocks.sample_latent); once is enough
    workdir.run("synthesize", {"synthesize": {"count": 4, "batch_size": 4, "source_min_share": 0.3}})
    synthetic = Dataset(workdir.path / "data" / "synthetic")
    synthetic.validate()
    assert len(synthetic) == 4 and {r["source_id"] for r in synthetic.records} <= set(truth(raw_ds))


def test_diversity_seeds_below_two_is_a_user_error(workdir, tiny_dataset):
    tiny_dataset(workdir.path / "data" / "raw", {"train": 4, "val": 2}, conditions_file=True)
    proc = workdir.run("train_generator", {"generator": baseline_params("vae", diversity_seeds=1)}, check=False)
    assert proc.returncode == 1 and "generator.diversity_seeds" in proc.stderr
    assert not (workdir.path / "models" / "generator").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_perceptual_weight_adds_a_logged_term(backend, train_data):
    key = {"pix2pix": "loss_g_perceptual", "vae": "loss_perceptual"}[backend]
    total = {"pix2pix": "loss_g", "vae": "loss"}[backend]

    def first_losses(weight: float) -> dict:
        logged = []
        gen = generate.create(Params(baseline_params(backend, **{backend: {"iterations": 2,
                                                                            "perceptual_weight": weight}})),
                              "camvid11")
        gen.train(train_data, None, on_step=lambda step, l: logged.append(l))
        return logged[0]

    off, on = first_losses(0.0), first_losses(3.0)
    assert key not in off and on[key] > 0
    assert on[total] == pytest.approx(off[total] + 3.0 * on[key], rel=1e-5)
