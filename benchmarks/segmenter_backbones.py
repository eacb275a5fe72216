"""Segmenter backbones compared at a fixed CPU budget: s/iter, training minutes and mIoU.

Trains params.yaml's segmenter (``variant real``) once per backbone spec with synthdrive's own
training (``synthdrive.segment.train.train``), then measures mIoU on a split of the same dataset
folder with ``synthdrive.segment.evaluate``. Prints a markdown table.

    nice -n 10 .venv/bin/python benchmarks/segmenter_backbones.py --data DATASET_FOLDER \\
        [--iters 150] [--batch 4] [--split val] [--threads 1] \\
        [--specs native:scratch efficientnet_lite0:imagenet] [--set model.backbone_lr_mult=1.0 ...]

A spec is ``BACKBONE:scratch|imagenet`` (``segmenter.model.backbone`` and ``.pretrained``);
``segmenter.model.backbone_lr_mult`` stays as params.yaml says (auto: 0.1 for imagenet).
DATASET_FOLDER is a synthdrive dataset (e.g. a collected ``data/raw``; the CamVid profile is
``collect.source: folder``, ``collect.folder.path: ../shared/data/camvid``).
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    from synthdrive import params
    from synthdrive.dataset import Dataset
    from synthdrive.params import Params
    from synthdrive.segment import evaluate as ev
    from synthdrive.segment.train import run_config, train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--split", default="val", help="split measured (the others' frames are not used)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="segmenter.model.name override")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="segmenter.height/width override (default: params.yaml's)")
    parser.add_argument("--specs", nargs="+", default=["native:scratch", "efficientnet_lite0:imagenet"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="segmenter.* overrides, YAML values (e.g. model.backbone_lr_mult=1.0 train.lr=4e-4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = params.load()
    base = p["segmenter"].to_dict()
    label_space = Dataset(args.data).meta["label_space"]
    tmp = Path(tempfile.mkdtemp(prefix="segbackbones-"))
    rows = []
    for spec in args.specs:
        backbone, _, init = spec.partition(":")
        if init not in ("scratch", "imagenet"):
            raise SystemExit(f"spec {spec!r}: give BACKBONE:scratch or BACKBONE:imagenet")
        seg = copy.deepcopy(base)
        seg["model"].update(backbone=backbone, pretrained=init == "imagenet")
        if args.model:
            seg["model"]["name"] = args.model
        if args.size:
            seg["height"], seg["width"] = args.size
        for item in args.set:
            key, _, value = item.partition("=")
            *parents, leaf = key.split(".")
            node = seg
            for k in parents:
                node = node[k]
            if leaf not in node:
                raise SystemExit(f"--set {item}: segmenter.{key} is not in params.yaml")
            node[leaf] = yaml.safe_load(value)
        seg["train"].update(iters=args.iters, batch_size=args.batch, checkpoint_interval=args.iters,
                            log_interval=max(args.iters // 5, 1), val_interval=0, num_workers=0,
                            resume=False, mlflow_vis_backend=False)
        work = tmp / spec.replace(":", "-")
        cfg = run_config(Params(seg, "segmenter"), label_space=label_space, variant="real",
                         seed=args.seed, raw=args.data, synthetic=tmp / "none", kept=tmp / "none",
                         work_dir=work / "work")
        losses = []
        t0 = time.perf_counter()
        summary = train(cfg, work / "model", resume=False, log_interval=max(args.iters // 5, 1),
                        log_fn=lambda m, step: losses.append((step, round(m.get("loss", float("nan")), 2))))
        minutes = (time.perf_counter() - t0) / 60
        model = ev.load_segmenter(work / "model")
        t1 = time.perf_counter()
        preds = ev.predict(model, args.data, splits=[args.split], batch_size=4)
        metrics = ev.miou(preds, model.dataset_meta["classes"])
        per_condition = {c: m["mIoU"] for c, m in
                         ev.by_condition(preds, model.dataset_meta["classes"])["conditions"].items()}
        lr_mult = (cfg.optim_wrapper.paramwise_cfg.get("custom_keys") or {}).get("backbone", {}).get("lr_mult", 1.0)
        rows.append((seg["model"]["name"], backbone, init, lr_mult, summary["seconds_per_iter"], minutes,
                     metrics["mIoU"], metrics["aAcc"], len(preds), time.perf_counter() - t1, losses,
                     metrics["per_class_iou"], per_condition))
        print(f"done {spec}: {rows[-1][:10]}", flush=True)
    h, w = (args.size or (base["height"], base["width"]))
    print(f"\n{args.data} ({args.split} split), {h}x{w}, batch {args.batch}, {args.iters} iterations, "
          f"{args.threads} torch thread(s), seed {args.seed}\n")
    print(f"overrides: {' '.join(args.set) or 'none'}\n")
    print("| model | backbone | init | backbone lr_mult | s/iter | train min | mIoU | per condition | aAcc "
          "| frames | loss by step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        conditions = " ".join(f"{c}:{v:.1f}" for c, v in r[12].items())
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:g} | {r[4]:.2f} | {r[5]:.1f} | {r[6]:.1f} | {conditions} "
              f"| {r[7]:.1f} | {r[8]} | {' '.join(f'{s}:{v}' for s, v in r[10])} |")
    print("\nper-class IoU")
    classes = list(rows[0][11]) if rows else []
    print("| backbone | init | " + " | ".join(classes) + " |")
    print("|---|---|" + "---|" * len(classes))
    for r in rows:
        print(f"| {r[1]} | {r[2]} | " + " | ".join("-" if r[11][c] is None else f"{r[11][c]:.1f}" for c in classes) + " |")


if __name__ == "__main__":
    main()
