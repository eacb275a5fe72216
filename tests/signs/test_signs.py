"""Sign transfer test: renderer, sign_data/train_signs stages, diffusers backend, real-photo scoring."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdrive.conditions import Condition, all_conditions
from synthdrive.dataset import read_png
from synthdrive.params import ParamError, Params
from synthdrive.signs import CLASSES, classifier
from synthdrive.signs.render import render_sign
from tests.helpers import REPO

TINY = {"signs": {"real_dir": "",
                  "data": {"counts": {"train": 12, "val": 4, "shifted": 4},
                           "backgrounds": {"frames_per_condition": 1, "height": 64, "width": 128}},
                  "train": {"epochs": 1, "batch": 8, "threads": 1}}}


def test_render_is_deterministic_and_classes_differ():
    cond = Condition("clear", "day")
    a = render_sign("stop", 7, cond)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_sign("stop", 7, cond))
    assert not np.array_equal(a, render_sign("stop", 8, cond))
    assert render_sign("warning", 7, cond, size=48, style="shifted").shape == (48, 48, 3)
    with pytest.raises(ValueError, match="unknown sign class"):
        render_sign("yield", 0, cond)


def test_stop_crops_are_redder_than_warning_crops():
    """The renderer draws what it names: stop signs are mostly red, warning signs mostly not."""
    def red_share(kind):
        shares = []
        for i in range(24):
            img = render_sign(kind, i, Condition("clear", "day")).astype(int)
            centre = img[10:22, 10:22]
            shares.append(np.mean((centre[..., 0] > centre[..., 1] + 40) & (centre[..., 0] > centre[..., 2] + 30)))
        return np.mean(shares)

    assert red_share("stop") > red_share("warning") + 0.2


def test_night_is_darker_than_day():
    day = np.mean([render_sign("warning", i, Condition("clear", "day")).mean() for i in range(16)])
    night = np.mean([render_sign("warning", i, Condition("clear", "night")).mean() for i in range(16)])
    assert night < 0.6 * day


def test_sign_data_balanced_and_deterministic(tmp_path):
    import yaml

    from synthdrive.signs.data import make_sign_data

    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["signs"]["data"]
    cfg["counts"] = {"train": 5, "val": 2, "shifted": 3}
    cfg["backgrounds"].update(street_fraction=0.5, frames_per_condition=1, height=64, width=128)
    for run in ("a", "b"):
        make_sign_data(Params(cfg, "signs.data"), tmp_path / run)
    for split, n in cfg["counts"].items():
        for kind in CLASSES:
            files = sorted((tmp_path / "a" / split / kind).glob("*.png"))
            assert len(files) == n
            for f in files:
                assert f.read_bytes() == (tmp_path / "b" / split / kind / f.name).read_bytes()
    records = [json.loads(line) for line in (tmp_path / "a" / "index.jsonl").read_text().splitlines()]
    assert len(records) == 2 * sum(cfg["counts"].values())
    assert {r["style"] for r in records if r["split"] == "shifted"} == {"shifted"}
    if importlib.util.find_spec("synthdrive.render"):  # backgrounds cut from street scenes
        assert {r["background"] for r in records} == {"street", "synthetic"}
    conditions = {r["condition"] for r in records}
    assert conditions <= set(cfg["conditions"]) and len(conditions) > 1


def test_sign_data_rejects_bad_params(tmp_path):
    import yaml

    from synthdrive.signs.data import make_sign_data

    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["signs"]["data"]
    cfg["backend"] = "photoshop"
    with pytest.raises(ParamError, match="backend"):
        make_sign_data(Params(cfg, "signs.data"), tmp_path / "x")
    cfg["backend"], cfg["conditions"] = "procedural", {"sunny-noon": 1.0}
    with pytest.raises(ParamError, match="signs.data.conditions"):
        make_sign_data(Params(cfg, "signs.data"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_stages_end_to_end_on_tiny_counts(workdir):
    workdir.run("sign_data", TINY)
    data = workdir.path / "data" / "signs"
    for split in ("train", "val", "shifted"):
        for kind in CLASSES:
            assert len(list((data / split / kind).glob("*.png"))) == TINY["signs"]["data"]["counts"][split]
    workdir.run("train_signs")
    metrics = json.loads((workdir.path / "metrics" / "signs.json").read_text())
    assert metrics["test_set"]["kind"] == "procedural_shifted"
    assert metrics["count"] == 8 and metrics["train"]["images"] == 24
    assert sum(map(sum, metrics["confusion"]["matrix"])) == 8
    assert set(metrics["per_class_recall"]) == set(CLASSES) and "accuracy" in metrics["before_training"]
    for png in ("signs_loss.png", "signs_misclassified.png", "sign_samples.png"):
        assert (workdir.path / "metrics" / png).stat().st_size > 0
    model, config = classifier.load(workdir.path / "models" / "signs")
    assert config["input_size"] == 64 and config["init"] == "imagenet"  # the default: pretrained net, 64x64
    shifted = classifier.load_folder(data / "shifted", config["input_size"])
    preds = classifier.predict(model, shifted)
    wrong = sum(map(sum, metrics["confusion"]["matrix"])) - sum(metrics["confusion"]["matrix"][i][i] for i in range(2))
    assert int((preds != shifted.labels).sum()) == wrong


def test_train_signs_missing_real_dir_is_one_line_error(workdir):
    proc = workdir.run("train_signs", {"signs": {"real_dir": "no/such/folder"}}, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: params.yaml: signs.real_dir")
    assert not (workdir.path / "models" / "signs").exists()


def test_scores_confusion_and_recall():
    labels = torch.tensor([0, 0, 0, 1, 1])
    preds = torch.tensor([0, 1, 0, 1, 1])
    s = classifier.scores(labels, preds)
    assert s["confusion"]["matrix"] == [[2, 1], [0, 2]]
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["per_class_recall"] == {"stop": pytest.approx(2 / 3), "warning": 1.0}


def test_load_folder_names_missing_class(tmp_path):
    (tmp_path / "stop").mkdir()
    with pytest.raises(Exception, match="stop: no images"):
        classifier.load_folder(tmp_path, 32)


def test_real_photos_are_read_and_scored(gtsrb_dev, tmp_path):
    """The evaluation reads every real photo with the right label and scores it (no accuracy claim)."""
    real = classifier.load_folder(gtsrb_dev, 32)
    expected = {kind: len([p for p in (gtsrb_dev / kind).iterdir() if p.suffix.lower() == ".png"])
                for kind in CLASSES}
    assert len(real) == sum(expected.values())
    assert int((real.labels == 0).sum()) == expected["stop"]
    assert real.images.shape[1:] == (3, 32, 32) and real.images.float().std() > 10
    model = classifier.build_model(0)
    scores, preds = classifier.evaluate(model, real)
    assert scores["count"] == len(real)
    matrix = np.array(scores["confusion"]["matrix"])
    assert matrix.sum(1).tolist() == [expected["stop"], expected["warning"]]
    n = classifier.misclassified_grid(real, preds, tmp_path / "wrong.png")
    assert n == len(real) - np.trace(matrix) and (tmp_path / "wrong.png").is_file()


def tiny_diffusers_pipeline(folder: Path) -> Path:
    """A random-weight Stable Diffusion pipeline (~100k params) built from configs, saved locally."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())  # byte-level BPE without merges: one token per character
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=8, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=32, projection_dim=16))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def test_diffusers_backend_with_tiny_random_pipeline(tmp_path):
    import yaml

    from synthdrive.signs.data import make_sign_data

    torch.set_num_threads(1)
    pipe_dir = tiny_diffusers_pipeline(tmp_path / "tiny-sd")
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["signs"]["data"]
    cfg.update(backend="diffusers", counts={"train": 2, "val": 1, "shifted": 1})
    cfg["backgrounds"]["street_fraction"] = 0.0
    cfg["diffusers"].update(model_dir=str(pipe_dir), steps=2, height=16, width=16, batch=2, device="cpu")
    make_sign_data(Params(cfg, "signs.data"), tmp_path / "a")
    records = [json.loads(line) for line in (tmp_path / "a" / "index.jsonl").read_text().splitlines()]
    generated = [r for r in records if r["backend"] == "diffusers"]
    assert len(generated) == 6 and {r["prompt"] for r in generated} == set(cfg["diffusers"]["prompts"].values())
    assert read_png(tmp_path / "a" / generated[0]["file"], "RGB").shape == (32, 32, 3)
    # same seed -> same images; the held-out shifted set stays procedural
    make_sign_data(Params(cfg, "signs.data"), tmp_path / "b")
    for r in records:
        assert (tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()
    assert {r["backend"] for r in records if r["split"] == "shifted"} == {"procedural"}


def test_diffusers_backend_missing_weights_names_the_param(tmp_path):
    import yaml

    from synthdrive.signs.data import make_sign_data

    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["signs"]["data"]
    cfg.update(backend="diffusers")
    cfg["diffusers"]["model_dir"] = str(tmp_path / "nothing")
    with pytest.raises(ParamError, match="signs.data.diffusers.model_dir"):
        make_sign_data(Params(cfg, "signs.data"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_condition_renders():
    for cond in all_conditions():
        img = render_sign("stop", 3, cond)
        assert img.std() > 1, cond


# slow: four `dvc repro`s; tests/pipeline/test_pipeline.py checks that a param reruns only its readers by default
@pytest.mark.slow
def test_classifier_params_rerun_only_train_signs(dvc_repo):
    """dvc: a changed signs.train param reruns train_signs alone; signs.data reruns both."""
    repo = dvc_repo(copy="all")
    (repo.path / "synthdrive" / "render").mkdir(exist_ok=True)  # a declared dep of sign_data
    repo.init(dvc=False)

    def dvc(*args):
        return repo.dvc(*args, timeout=900).stdout

    repo.set_params(TINY)
    dvc("repro", "train_signs")
    repo.set_params({"signs": {"train": {"lr": 0.002}}})
    out = dvc("repro", "train_signs")
    assert "Running stage 'train_signs'" in out and "Running stage 'sign_data'" not in out
    repo.set_params({"signs": {"real_dir": ""}})  # unchanged value: nothing reruns
    assert "Running stage" not in dvc("repro", "train_signs")
    repo.set_params({"signs": {"data": {"seed": 1}}})
    out = dvc("repro", "train_signs")
    assert "Running stage 'sign_data'" in out and "Running stage 'train_signs'" in out


def test_build_model_inits():
    from synthdrive import pretrained

    torch.set_num_threads(1)
    scratch = classifier.build_model(0, "scratch")
    assert scratch.fc.out_features == 2
    net = classifier.build_model(0, "imagenet")
    assert net.classifier.out_features == 2
    assert torch.equal(net.conv_stem.weight, pretrained.imagenet_state_dict(0)["conv_stem.weight"])
    with torch.no_grad():
        assert net.eval()(classifier.normalise(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown init"):
        classifier.build_model(0, "imagenet21k")


@pytest.mark.parametrize("init, size, arch", [("imagenet", 40, "timm.tf_efficientnet_lite0"),
                                               ("scratch", 32, "torchvision.resnet18")])
def test_train_signs_each_init_end_to_end(workdir, init, size, arch):
    workdir.run("sign_data", TINY)
    if init == "imagenet":
        proc = workdir.run("train_signs", {"signs": {"train": {"init": "bogus"}}}, check=False)
        assert proc.returncode == 1 and "signs.train.init" in proc.stderr.strip().splitlines()[-1]
    workdir.run("train_signs", {"signs": {"train": {"init": init, "input_size": 32, "epochs": 1,
                                                    "imagenet": {"input_size": 40, "epochs": 1}}}})
    metrics = json.loads((workdir.path / "metrics" / "signs.json").read_text())
    assert metrics["train"]["init"] == init and metrics["train"]["input_size"] == size
    assert metrics["train"]["arch"] == arch and metrics["train"]["epochs"] == 1
    model, config = classifier.load(workdir.path / "models" / "signs")
    assert config["arch"] == arch and config["input_size"] == size
    shifted = classifier.load_folder(workdir.path / "data" / "signs" / "shifted", config["input_size"])
    scores, _ = classifier.evaluate(model, shifted)
    assert scores["confusion"] == metrics["confusion"]  # the saved model is the one scored
