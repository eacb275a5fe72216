"""Generators (spade_gan, sdm, controlnet at tiny size): sampling, training, checkpoints and
resume, the perceptual loss, and the train_generator + synthesize stages end to end on the tiny
dataset (tests/conftest.py's `raw`). The synthesis planner is tested in
tests/synthesize/test_synthesize.py."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdrive import generate
from synthdrive.conditions import Condition
from synthdrive.dataset import Dataset
from synthdrive.errors import UserError
from synthdrive.generate.controlnet import ade20k_layout
from synthdrive.params import Params
from tests.helpers import GEN_SIZE, checkout_copy, gen_params
from tests.helpers import layouts as _layouts

torch.set_num_threads(1)
H, W = GEN_SIZE


def test_spade_gan_save_load_round_trip(raw, tmp_path):
    gen = generate.create(Params(gen_params()), "camvid11")
    gen.save(tmp_path / "g")
    loaded = generate.load(tmp_path / "g")
    assert loaded.backend == "spade_gan" and loaded.size == (H, W)
    conds, seeds = [Condition("rain", "night")] * 2, [3, 4]
    np.testing.assert_array_equal(gen.sample(_layouts(raw), conds, seeds), loaded.sample(_layouts(raw), conds, seeds))


def test_sampling_is_deterministic_by_seed_and_independent_of_batch(raw):
    gen = generate.create(Params(gen_params()), "camvid11")
    layouts, conds = _layouts(raw, 3), [Condition("clear", "dusk")] * 3
    a = gen.sample(layouts, conds, [1, 2, 3])
    np.testing.assert_array_equal(a, gen.sample(layouts, conds, [1, 2, 3]))
    assert not np.array_equal(a[0], gen.sample(layouts[:1], conds[:1], [9])[0])
    alone = gen.sample(layouts[1:2], conds[1:2], [2])[0]  # same seed, other batch mates
    assert np.abs(alone.astype(int) - a[1]).max() <= 1


def test_missing_generator_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="train the generator first"):
        generate.load(tmp_path / "nothing")


def test_training_changes_weights_and_lowers_l1(train_data):
    gen = generate.create(Params(gen_params(spade_gan={"iterations": 12})), "camvid11")
    before = {k: v.clone() for k, v in gen.net.state_dict().items()}
    losses = []
    gen.train(train_data, None, on_step=lambda step, l: losses.append(l["loss_g_l1"]))
    assert len(losses) == 12 and gen.trained_steps == 12
    assert any(not torch.equal(before[k], v) for k, v in gen.net.state_dict().items())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_checkpoint_resume_replays_an_uninterrupted_run(train_data, tmp_path):
    straight = generate.create(Params(gen_params()), "camvid11")
    straight.train(train_data, tmp_path / "a")
    first = generate.create(Params(gen_params(spade_gan={"iterations": 2})), "camvid11")
    first.train(train_data, tmp_path / "b")
    assert first.train_seconds > 0
    # The checkpoint carries the training time so far: a resumed run reports the whole training.
    ckpt_file = tmp_path / "b" / "spade_gan.pt"
    state = torch.load(ckpt_file, weights_only=True)
    torch.save({**state, "train_seconds": 1000.0}, ckpt_file)
    resumed = generate.create(Params(gen_params()), "camvid11")
    steps = []
    resumed.train(train_data, tmp_path / "b", on_step=lambda step, _: steps.append(step))
    assert steps == [3, 4]  # started from the step-2 checkpoint
    assert 1000.0 < resumed.train_seconds < 1000.0 + 600
    for key, value in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=0, atol=1e-6)
    # the step-4 checkpoint of these settings, but a re-rendered dataset (same ids, other pixels)
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    rerendered = generate.create(Params(gen_params()), "camvid11")
    steps.clear()
    rerendered.train(dataclasses.replace(train_data, images=-train_data.images), tmp_path / "c",
                     on_step=lambda step, _: steps.append(step))
    assert steps[0] == 1
    changed = generate.create(Params(gen_params(spade_gan={"l1_weight": 1.0})), "camvid11")
    steps.clear()
    changed.train(train_data, tmp_path / "b", on_step=lambda step, _: steps.append(step))
    assert steps[0] == 1  # other settings: the checkpoint is not reused


def test_resume_needs_the_same_training_code(train_data, tmp_path, monkeypatch, capsys):
    """DVC reruns train_generator after a code edit; the finished checkpoint of the old code must
    then not be resumed (zero steps, the old model exported again). Raising iterations on the same
    code, settings and data still continues from it."""
    def steps_of(iterations: int, ckpt: Path) -> list[int]:
        steps = []
        gen = generate.create(Params(gen_params(spade_gan={"iterations": iterations})), "camvid11")
        gen.train(train_data, ckpt, on_step=lambda step, _: steps.append(step))
        return steps

    assert steps_of(4, tmp_path / "ckpt") == [1, 2, 3, 4]
    shutil.copytree(tmp_path / "ckpt", tmp_path / "finished")
    assert steps_of(6, tmp_path / "ckpt") == [5, 6]  # raised iterations: continues
    assert steps_of(6, tmp_path / "ckpt") == []  # same training, finished: nothing to do
    copy = checkout_copy(tmp_path, monkeypatch)
    assert steps_of(6, tmp_path / "ckpt") == []  # the same code elsewhere hashes the same
    capsys.readouterr()
    # an edit in the backend, in the shared loop, in a module imported on the way, in the
    # label spaces; each on the finished step-4 checkpoint of the unedited code
    for i, edited in enumerate(["synthdrive/generate/spade_gan.py", "synthdrive/generate/training.py",
                                "synthdrive/labels.py", "synthdrive/label_spaces.yaml"]):
        file = copy / edited
        original = file.read_text()
        file.write_text(original + "\n# edited\n")
        shutil.copytree(tmp_path / "finished", tmp_path / f"case{i}")
        assert steps_of(6, tmp_path / f"case{i}") == [1, 2, 3, 4, 5, 6], edited  # from step 0
        assert "resume: code changed since the checkpoint" in capsys.readouterr().out
        assert steps_of(6, tmp_path / f"case{i}") == []  # the new code's checkpoint resumes
        file.write_text(original)
    # another backend's module is not code this backend trains with
    (copy / "synthdrive/generate/sdm.py").write_text("# edited\n")
    assert steps_of(6, tmp_path / "ckpt") == []
    assert torch.load(tmp_path / "ckpt" / "spade_gan.pt", weights_only=True)["code"]


def test_code_fingerprint_hashes_the_backends_import_closure():
    from synthdrive.codehash import closure

    files = closure("synthdrive.generate.pix2pix")
    assert {"synthdrive/generate/pix2pix.py", "synthdrive/generate/spade_gan.py", "synthdrive/generate/training.py",
            "synthdrive/generate/__init__.py", "synthdrive/codehash.py", "synthdrive/labels.py",
            "synthdrive/label_spaces.yaml"} <= set(files)
    assert not {"synthdrive/generate/sdm.py", "synthdrive/generate/floor.py", "synthdrive/__init__.py"} & set(files)


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint_is_a_user_error_naming_the_file(train_data, tmp_path, content):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "spade_gan.pt").write_bytes(content)
    gen = generate.create(Params(gen_params()), "camvid11")
    with pytest.raises(UserError) as caught:
        gen.train(train_data, tmp_path / "ckpt")
    message = str(caught.value)
    assert str(tmp_path / "ckpt" / "spade_gan.pt") in message and "\n" not in message
    assert "delete it" in message and "generator.resume: false" in message
    # the fix it names works: resume off trains from step 0 and overwrites the file
    steps = []
    gen = generate.create(Params(gen_params(resume=False)), "camvid11")
    gen.train(train_data, tmp_path / "ckpt", on_step=lambda step, _: steps.append(step))
    assert steps == [1, 2, 3, 4]
    assert torch.load(tmp_path / "ckpt" / "spade_gan.pt", weights_only=True)["step"] == 4


def test_sdm_tiny_end_to_end(train_data, raw, tmp_path):
    gen = generate.create(Params(gen_params(backend="sdm")), "camvid11")
    losses = []
    gen.train(train_data, tmp_path / "ckpt", on_step=lambda step, l: losses.append(l["loss"]))
    assert len(losses) == 2 and all(np.isfinite(losses))
    gen.save(tmp_path / "g")
    loaded = generate.load(tmp_path / "g")
    conds = [Condition("fog", "night"), Condition("clear", "day")]
    for eta in (0.0, 1.0):
        a = loaded.sample(_layouts(raw), conds, [5, 6], steps=3, eta=eta, guidance=1.5)
        assert a.shape == (2, H, W, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, loaded.sample(_layouts(raw), conds, [5, 6], steps=3, eta=eta))


def _tiny_stable_diffusion(root: Path) -> tuple[Path, Path]:
    """A random-weight SD + seg ControlNet saved like the real ones (nothing from a hub)."""
    from diffusers import (AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
    vae = AutoencoderKL(block_out_channels=(4, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                                num_hidden_layers=1, vocab_size=100, projection_dim=16,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    (root / "tok").mkdir(parents=True)
    (root / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "tok" / "vocab.json"), str(root / "tok" / "merges.txt"),
                              model_max_length=77)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False)
    StableDiffusionControlNetPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                      controlnet=controlnet, scheduler=scheduler, safety_checker=None,
                                      feature_extractor=None, requires_safety_checker=False
                                      ).save_pretrained(root / "sd")
    controlnet.save_pretrained(root / "controlnet")
    return root / "sd", root / "controlnet"


def test_controlnet_tiny_end_to_end(raw, tmp_path):
    base, cn = _tiny_stable_diffusion(tmp_path / "weights")
    cfg = gen_params(backend="controlnet", controlnet={"base_model_dir": str(base), "controlnet_dir": str(cn),
                                                        "height": H, "width": W, "device": "cpu"})
    gen = generate.create(Params(cfg), "camvid11")
    gen.train(None, None)
    gen.save(tmp_path / "g")
    loaded = generate.load(tmp_path / "g")
    conds = [Condition("rain", "night")] * 2
    kwargs = dict(steps=2, guidance=9.0, negative_prompt="blurry")
    a = loaded.sample(_layouts(raw), conds, [1, 2], prompts=["a rainy street", "a foggy street"], **kwargs)
    assert a.shape == (2, H, W, 3) and a.dtype == np.uint8
    b = loaded.sample(_layouts(raw, 1), conds[:1], [1], prompts=["a rainy street"], **kwargs)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("param", ["base_model_dir", "controlnet_dir"])
def test_controlnet_missing_weights_names_the_param(tmp_path, param):
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    dirs = {"base_model_dir": str(tmp_path / "sd"), "controlnet_dir": str(tmp_path / "missing")}
    if param == "base_model_dir":
        dirs = {"base_model_dir": "", "controlnet_dir": str(tmp_path / "sd")}
    with pytest.raises(UserError, match=f"generator.controlnet.{param}"):
        generate.create(Params(gen_params(backend="controlnet", controlnet=dirs)), "camvid11")


def test_ade20k_drawing_uses_the_controlnet_palette():
    layout = np.array([[0, 3, 8, 255]], np.uint8)  # camvid11 sky, road, car, ignore
    np.testing.assert_array_equal(ade20k_layout(layout, "camvid11")[0],
                                  [[6, 230, 230], [140, 140, 140], [0, 102, 200], [0, 0, 0]])


def test_stages_train_generator_then_synthesize(workdir, tiny_dataset):
    """The two stage scripts on a tiny dataset: outputs, metrics and the floor warning path."""
    tiny_dataset(workdir.path / "data" / "raw", conditions_file=True)
    workdir.run("train_generator", {"generator": gen_params(), "classify": {"use": "auto"}})
    metrics = json.loads((workdir.path / "metrics" / "train_generator.json").read_text())
    assert metrics["trained_steps"] == 4 and metrics["l1_floor"] > 0
    assert "brightness/clear-dusk/real" in metrics
    assert (workdir.path / "models" / "generator" / "generator.json").is_file()
    assert (workdir.path / "metrics" / "generator_samples.png").is_file()
    proc = workdir.run("synthesize", {"synthesize": {"count": 6, "batch_size": 4, "source_min_share": 0.3}})
    synthetic = Dataset(workdir.path / "data" / "synthetic")
    synthetic.validate()
    assert len(synthetic) == 6 and "synthesize: 6 frames" in proc.stdout
    assert all(r["source_condition"] == "clear-day" for r in synthetic.records)
    assert (workdir.path / "metrics" / "synthesize_samples.png").is_file()


def test_train_generator_writes_no_model_when_its_health_check_fails(workdir, tiny_dataset, monkeypatch):
    """models/generator appears only once the final health check (floor, diversity, grids) has
    run: a check that crashes leaves no model behind, nor a temp folder."""
    tiny_dataset(workdir.path / "data" / "raw", conditions_file=True)
    workdir.set_params({"generator": gen_params(), "classify": {"use": "auto"}})
    stage = workdir.load_stage("train_generator")
    floor_metrics = stage.floor_metrics

    def failing(*args, all_conditions: bool = False, **kwargs):
        if all_conditions:  # the final check only; the periodic ones during training pass
            raise RuntimeError("health check failed")
        return floor_metrics(*args, all_conditions=all_conditions, **kwargs)

    monkeypatch.setattr(stage, "floor_metrics", failing)
    workdir.stub_stage_run()
    with pytest.raises(RuntimeError, match="health check failed"):
        workdir.run(stage)
    assert (workdir.path / "models" / "generator.ckpt" / "spade_gan.pt").is_file()  # it trained
    assert sorted(p.name for p in (workdir.path / "models").iterdir()) == ["generator.ckpt"]


# --- perceptual loss (generate/perceptual.py) ------------------------------------------------------

@pytest.fixture(scope="module")
def perceptual_loss():
    from synthdrive.generate.perceptual import PerceptualLoss

    return PerceptualLoss()


def test_perceptual_loss_is_zero_for_identical_images_only(perceptual_loss):
    torch.manual_seed(0)
    real = torch.rand(2, 3, H, W) * 2 - 1
    assert perceptual_loss(real, real.clone()).item() == 0.0
    assert perceptual_loss(real.flip(-1), real).item() > 0.01
    assert perceptual_loss((real + 0.2).clamp(-1, 1), real).item() > 0
    # [-1, 1] -> ImageNet normalisation: mid-grey 0 maps to (0.5 - mean) / std
    from synthdrive.pretrained import MEAN, STD
    expected = (0.5 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(perceptual_loss.normalise(torch.zeros(1, 3, 1, 1)).flatten(), expected)


def test_perceptual_loss_trains_the_generator_not_the_feature_net(perceptual_loss):
    torch.manual_seed(0)
    gen = torch.nn.Conv2d(3, 3, 3, padding=1)
    real = torch.rand(2, 3, H, W) * 2 - 1
    stats = {k: v.clone() for k, v in perceptual_loss.state_dict().items()}
    perceptual_loss.train()  # an owner's train() keeps the feature net in eval mode
    assert not perceptual_loss.net.training
    loss = perceptual_loss(torch.tanh(gen(real)), real)
    loss.backward()
    assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in perceptual_loss.net.parameters())
    for key, value in perceptual_loss.state_dict().items():  # BatchNorm running stats untouched
        assert torch.equal(value, stats[key]), key


def test_perceptual_weight_adds_a_logged_term_to_the_generator_loss(train_data):
    def first_losses(weight: float) -> dict:
        logged = []
        gen = generate.create(Params(gen_params(spade_gan={"iterations": 2, "perceptual_weight": weight})),
                              "camvid11")
        gen.train(train_data, None, on_step=lambda step, l: logged.append(l))
        assert len(logged) == 2
        return logged[0]

    off, on = first_losses(0.0), first_losses(2.0)
    assert "loss_g_perceptual" not in off and on["loss_g_perceptual"] > 0
    # step 1 sees the same weights and batch: the loss differs by exactly weight x perceptual
    assert on["loss_g"] != off["loss_g"]
    assert on["loss_g"] == pytest.approx(off["loss_g"] + 2.0 * on["loss_g_perceptual"], rel=1e-5)


def test_perceptual_training_resumes_and_its_weight_is_fingerprinted(train_data, tmp_path):
    def run(iterations: int, ckpt: Path, weight: float = 1.0):
        steps = []
        gen = generate.create(Params(gen_params(spade_gan={"iterations": iterations, "perceptual_weight": weight})),
                              "camvid11")
        gen.train(train_data, ckpt, on_step=lambda step, _: steps.append(step))
        return gen, steps

    straight, _ = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed, steps = run(4, tmp_path / "b")
    assert steps == [3, 4]
    for key, value in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=0, atol=1e-6)
    assert "perceptual" not in " ".join(torch.load(tmp_path / "b" / "spade_gan.pt", weights_only=True)["generator"])
    _, steps = run(4, tmp_path / "b", weight=0.5)
    assert steps[0] == 1  # another weight: the checkpoint is not reused
    from synthdrive.codehash import closure
    for backend in ("spade_gan", "pix2pix", "vae"):
        files = closure(f"synthdrive.generate.{backend}")
        assert {"synthdrive/generate/perceptual.py", "synthdrive/pretrained.py"} <= set(files), backend
