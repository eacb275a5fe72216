"""Train one segmenter run (variant x seed) with mmengine's Runner, resumably, on CPU or under
torchrun (gloo), and export a slim checkpoint that loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

from synthdrive.codehash import code_fingerprint
from synthdrive.conditions import condition_key, rare_conditions
from synthdrive.dataset import Dataset, atomic_dir, write_json
from synthdrive.errors import UserError
from synthdrive.segment.config import CONFIG_FILE, build_config, save_config
from synthdrive.segment.data import EXTRA, REAL
from synthdrive.segment.photometric import condition_stats

VARIANTS = ("real", "real_aug", "real_synth", "real_aug_synth")
# Variants that train on filter_synthetic's kept frames (dvc.yaml: train_segmenter_synth).
SYNTH_VARIANTS = ("real_synth", "real_aug_synth")
# real_aug_synth's extra pools: its extra slots are dealt out to them in turn, so each gets half
# of the mix.ratio share the single-source variants give to one (README "Variants").
SHIFTED, SYNTHETIC = "shifted", "synthetic"
COMBINED_POOLS = (SHIFTED, SYNTHETIC)
# The modules whose code (with their imports) trains a segmenter: a change restarts training.
TRAINING_CODE = ("synthdrive.segment.train",)

# What mmengine's full checkpoints (message hub, resume state) hold besides tensors. Allow-listing
# them keeps torch's weights_only loading on for every load (shared/notes/mm-stack.md), instead of
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which would turn it off for the whole process. ``getattr``:
# HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, "min") etc.; the
# unpickler still refuses to call anything not allow-listed.
SAFE_GLOBALS = [getattr, HistoryBuffer, np.ndarray, np.dtype, np._core.multiarray._reconstruct,
                np._core.multiarray.scalar, np.dtypes.Float64DType, np.dtypes.Float32DType,
                np.dtypes.Int64DType, np.dtypes.Int32DType, np.dtypes.BoolDType]


def safe_globals():
    """Context manager allowing mmengine's checkpoint types under weights_only loading."""
    return torch.serialization.safe_globals(SAFE_GLOBALS)


def extra_per_batch(real_batch: int, ratio: float) -> int:
    """Extra (synthetic or shifted) frames per batch so they make ``ratio`` of the mixed batch."""
    if not 0 <= ratio < 1:
        raise UserError(f"params.yaml: segmenter.mix.ratio={ratio} must be in [0, 1)")
    return int(round(real_batch * ratio / (1 - ratio)))


def variant_sources(variant: str, *, raw: Path, synthetic: Path | None = None,
                    kept: Path | None = None, ignore_classes=(), shift_targets=(),
                    shift_stats: dict | None = None) -> list[dict]:
    """Training sources of a variant: real train frames, plus the extra pool(s) for mixed variants
    (real_aug_synth: the shifted real frames and the kept synthetic frames, each tagged with its
    ``pool`` for the sampler)."""
    real = dict(root=str(raw), splits=["train"], role=REAL)

    def shifted() -> dict:
        if not shift_targets:
            raise UserError(f"{variant} has no target conditions: set segmenter.real_aug.targets, or "
                            "give the real train split more than one condition")
        return dict(root=str(raw), splits=["train"], role=EXTRA, shift_to=list(shift_targets),
                    shift_stats=shift_stats or {})

    def synth() -> dict:
        if synthetic is None or not (synthetic / "index.jsonl").is_file():
            raise UserError(f"{synthetic}: no synthetic dataset; run the synthesize stage first")
        return dict(root=str(synthetic), splits=None, role=EXTRA,
                    ids=str(kept) if kept else None, ignore_classes=list(ignore_classes))

    if variant == "real":
        return [real]
    if variant == "real_aug":
        return [real, shifted()]
    if variant == "real_synth":
        return [real, synth()]
    if variant == "real_aug_synth":
        return [real, {**shifted(), "pool": SHIFTED}, {**synth(), "pool": SYNTHETIC}]
    raise UserError(f"unknown segmenter variant {variant!r}; choose one of: {', '.join(VARIANTS)}")


class TrackingHook(Hook):
    """Forwards training losses to a callable (our MLflow stage run) every ``interval`` iterations."""

    priority = "LOW"

    def __init__(self, log_fn: Callable[[dict, int], None], interval: int):
        self.log_fn, self.interval = log_fn, interval

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        if outputs and (step % self.interval == 0 or step == runner.max_iters):
            self.log_fn({k: float(v.detach()) for k, v in outputs.items()}, step)


def _init_distributed() -> str:
    """'pytorch' under torchrun, else 'none'. The process group is made here with gloo because
    mmengine's own init calls torch.cuda.set_device, which fails on a machine without a GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return "none"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo" if not torch.cuda.is_available() else "nccl")
    return "pytorch"


def inputs_fingerprint(cfg: Config) -> str:
    """A hash of every file the run trains and validates on (the dataset roots of its sources and
    the kept-ids file). The config only names these paths, and a new generator writes other
    images under the same names: without this, a rerun would resume a finished model trained on
    the old ones."""
    paths: set[Path] = set()
    for loader in ("train_dataloader", "val_dataloader"):
        for source in ((cfg.get(loader) or {}).get("dataset") or {}).get("sources", []):
            paths.update(Path(source[key]) for key in ("root", "ids") if source.get(key))
    digest = hashlib.sha256()
    for path in sorted(paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file).encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest() if file.is_file() else b"missing")
    return digest.hexdigest()


def _maybe_resume(cfg: Config, work_dir: Path, resume: bool) -> None:
    """Resume from work_dir's last checkpoint when it is the same training: the config there,
    the data it trained on and the code that trained it (``synthdrive.codehash``: the import
    closure of TRAINING_CODE) are this run's. Otherwise (say, an
    edited loss or photometric control: DVC reruns the stage, and a finished checkpoint would
    otherwise be resumed, train nothing and be exported again) train from step 0, saying why."""
    saved = work_dir / "run_config.py"
    text = f"{cfg.pretty_text}\n# inputs {inputs_fingerprint(cfg)}\n"
    code = f"# code {code_fingerprint(*TRAINING_CODE)}\n"
    if resume and saved.is_file() and (work_dir / "last_checkpoint").is_file():
        old = saved.read_text()
        if old == text + code:
            cfg.resume = True
        elif old.startswith(text):  # another code line, or none (a work dir from before code hashes)
            print(f"resume: code changed since the checkpoint in {work_dir}; training from step 0")
        else:
            print(f"resume: settings or training data changed since the checkpoint in {work_dir}; "
                  f"training from step 0")
    work_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(text + code)


class _IterCounter(Hook):
    """Counts the iterations this session trains (0 when a finished checkpoint is resumed)."""

    def __init__(self):
        self.count = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.count += 1


def train(cfg: Config, out_dir: Path, *, resume: bool = True,
          log_fn: Callable[[dict, int], None] | None = None, log_interval: int = 10) -> dict | None:
    """Train, then (rank 0) write ``out_dir``/{model.pth, config.json, train.json} atomically
    (the config as data: :func:`synthdrive.segment.config.load_config` reads it back).

    Returns the training summary on rank 0, None on other ranks.
    """
    # Tiny Adam second moments and clipped gradients underflow into float32 denormals, which
    # this CPU computes ~10x slower (benchmarks/segmenter.py: 5.0 vs 0.35 s/iter); flush them to 0.
    torch.set_flush_denormal(True)
    cfg = cfg.copy()
    cfg.launcher = _init_distributed()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    work_dir = Path(cfg.work_dir)
    if rank == 0:
        _maybe_resume(cfg, work_dir, resume)
    if world > 1:
        flag = [bool(cfg.get("resume"))]
        torch.distributed.broadcast_object_list(flag, src=0)
        cfg.resume = flag[0]
    runner = Runner.from_cfg(cfg)
    counter = _IterCounter()
    runner.register_hook(counter)
    if log_fn is not None and rank == 0:
        runner.register_hook(TrackingHook(log_fn, log_interval))
    t0 = time.perf_counter()
    with safe_globals():  # resume loads a full mmengine checkpoint
        runner.train()
    seconds = time.perf_counter() - t0
    if rank != 0:
        return None
    sampler = runner.train_dataloader.sampler
    iters = int(cfg.train_cfg.max_iters)
    summary = {
        "iters": iters, "world_size": world, "resumed": bool(cfg.resume),
        "trained_iters": counter.count,  # in this session: iters minus where it resumed
        "real_per_batch": sampler.real_per_batch, "extra_per_batch": sampler.extra_per_batch,
        "real_samples_seen": iters * sampler.real_per_batch * world,
        "extra_samples_seen": iters * sampler.extra_per_batch * world,
        "real_pool": len(sampler.pools[REAL]), "extra_pool": len(sampler.pools[EXTRA]),
        # real_aug_synth: each extra pool's size and exposure (flat keys: MLflow metrics)
        **{f"extra_pool.{name}": len(pool) for name, pool in sampler.sub_pools.items()},
        **{f"extra_samples_seen.{name}": n * world for name, n in sampler.extra_seen(iters).items()},
        "train_seconds": round(seconds, 1), "seconds_per_iter": round(seconds / max(iters, 1), 3),
        "final_losses": {k: round(float(v.current()), 4) for k, v in runner.message_hub.log_scalars.items()
                         if k.startswith("train/loss")},
    }
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    export_cfg = cfg.copy()
    export_cfg.resume, export_cfg.launcher = False, "none"
    with atomic_dir(out_dir) as tmp:
        # Tensors and plain types only: loads with weights_only=True and no allow-list.
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "meta": {"iters": iters, "seed": int(cfg.randomness.seed),
                             "dataset_meta": {"classes": list(cfg.train_dataloader.dataset.metainfo["classes"])}}}, tmp / "model.pth")
        save_config(export_cfg, tmp / CONFIG_FILE)
        write_json(tmp / "train.json", summary)
    return summary


def run_config(seg, *, label_space: str, variant: str, seed: int, raw: Path, synthetic: Path,
               kept: Path, work_dir: Path, tracking_uri: str | None = None) -> Config:
    """The Runner config of one (variant, seed) run from params.yaml's ``segmenter`` section."""
    if variant not in VARIANTS:
        raise UserError(f"unknown segmenter variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    real = Dataset(raw)
    train_records = real.split("train")
    if not train_records:
        raise UserError(f"{raw}: no train frames; the segmenter needs a train split")
    extra = 0 if variant == "real" else extra_per_batch(int(seg["train.batch_size"]), float(seg["mix.ratio"]))
    kwargs: dict = {}
    if variant in ("real_aug", "real_aug_synth"):
        kwargs["shift_targets"] = rare_conditions([condition_key(r) for r in train_records],
                                                  seg["real_aug.targets"])
        kwargs["shift_stats"] = condition_stats(real, train_records)
    if variant in SYNTH_VARIANTS:
        if not kept.is_file():
            raise UserError(f"{kept}: missing; run `dvc repro filter_synthetic` first")
        kwargs.update(synthetic=synthetic, kept=kept,
                      ignore_classes=json.loads(kept.read_text()).get("ignore_class_ids", []))
    sources = variant_sources(variant, raw=raw, **kwargs)
    cfg = build_config(seg.to_dict(), label_space=label_space, train_sources=sources,
                       val_sources=[dict(root=str(raw), splits=["val"])], work_dir=work_dir, seed=seed,
                       extra_per_batch=extra, tracking_uri=tracking_uri)
    if variant == "real_aug_synth":
        # The same extra_per_batch (batch size, extra share) as real_aug and real_synth, dealt out
        # in turn to the shifted-real and the synthetic pool: half of the extra slots each.
        cfg.train_dataloader.sampler.extra_pools = list(COMBINED_POOLS)
    return cfg
