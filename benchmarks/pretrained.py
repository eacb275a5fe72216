"""EfficientNet-Lite ImageNet features against the heuristic (classify) and against ResNet18 from
scratch (signs): the measurements behind the README's classify and signs tables.

    .venv/bin/python benchmarks/pretrained.py classify --procedural P/data/raw --camvid C/data/raw \\
        [--extra-procedural Q/data/raw ...] [--cache /tmp/feat]
    .venv/bin/python benchmarks/pretrained.py signs --data S/data/signs --real ../shared/data/gtsrb_dev \\
        [--seeds 0 1 2] [--inits scratch imagenet]
    .venv/bin/python benchmarks/pretrained.py top5 --real ../shared/data/gtsrb_dev

``classify``: P is a collected procedural dataset (the default collect), C the CamVid folder
collected (collect.source=folder; 0001TP = dusk, the rest day). Rows: in-domain (fit on P's
train split, scored on its test split; 5-fold blocked CV on P's train and on C's train; fit on C's
train, scored on C's val) and cross-domain (fit on P's train, applied to all of C), for the
heuristic and each effnet configuration. ``--extra-procedural`` adds cross-domain rows fit on other
procedural runs (e.g. a render mix closer to the photos). Features are computed once per dataset
and configuration (cached in --cache when given).
``signs``: trains each init x seed with the train_signs code and params.yaml's signs.train settings
(``--size/--epochs/--lr init=value`` override them) at 1 thread and scores GTSRB dev.
``top5``: how often ImageNet's "street sign" is in the top 5 for the real stop crops.
Every table is printed as markdown. One thread throughout (torch.set_num_threads(1)).
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from synthdrive.classify import FACTORS, cross_validate, evaluate, map_frames  # noqa: E402
from synthdrive.classify.heuristic import HeuristicClassifier  # noqa: E402
from synthdrive.classify.probe import ProbeClassifier  # noqa: E402
from synthdrive.dataset import Dataset  # noqa: E402

# name -> (constructor kwargs of ProbeClassifier, or None for the heuristic)
CONFIGS = {
    "heuristic": None,
    "effnet0 head": dict(variant=0, layer="head"),
    "effnet0 head + stats": dict(variant=0, layer="head", image_stats=True),
    "effnet0 stages": dict(variant=0, layer="stages"),
    "effnet0 stages, domain z": dict(variant=0, layer="stages", standardise="domain"),
    "effnet0 head, domain z": dict(variant=0, layer="head", standardise="domain"),
    "effnet0 head + stats, domain z": dict(variant=0, layer="head", image_stats=True, standardise="domain"),
    "effnet0 random init": dict(variant=0, layer="head", pretrained=False),
}


def make(name: str, sky: int | None):
    kw = CONFIGS[name]
    if kw is None:
        return HeuristicClassifier(sky_id=sky)
    return ProbeClassifier(sky_id=sky, size=(128, 256), **kw)


def features(clf, dataset: Dataset, cache: Path | None, tag: str) -> tuple[np.ndarray, float]:
    """(features of every frame, frames per second); cached by dataset path + extractor."""
    key = hashlib.sha1(f"{dataset.root.resolve()}|{type(clf).__name__}|{clf.describe()}".encode()).hexdigest()[:12]
    path = cache / f"{tag}-{key}.npz" if cache else None
    if path and path.is_file():
        f = np.load(path)
        return f["x"], float(f["fps"])
    start = time.perf_counter()
    x = np.stack(map_frames(dataset, dataset.records, clf.features, 16, f"features {tag}"))
    fps = len(x) / (time.perf_counter() - start)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x, fps=fps)
    return x, fps


def truths(records):
    return {f: [r.get(f) for r in records] for f in FACTORS}


def fit_predict(clf, x_fit, rec_fit, x_apply):
    clf.fit_features(x_fit, truths(rec_fit))
    return clf.predict_features(x_apply)


def summary(records, preds) -> dict:
    m = evaluate(records, preds)
    tod = m["time_of_day"]
    dusk = tod["classes"].index("dusk")
    row = np.array(tod["confusion"])[dusk]
    return {"tod": tod["accuracy"], "weather": m["weather"]["accuracy"],
            "dusk_recall": row[dusk] / row.sum() if row.sum() else None, "frames": tod["frames"]}


def cell(s: dict) -> str:
    dusk = "" if s["dusk_recall"] is None else f", dusk {s['dusk_recall']:.1%}"
    return f"{s['tod']:.1%} / {s['weather']:.1%}{dusk}"


def split(dataset: Dataset, x: np.ndarray, name: str):
    idx = [i for i, r in enumerate(dataset.records) if r["split"] == name]
    return x[idx], [dataset.records[i] for i in idx]


def classify(args) -> None:
    proc, cam = Dataset(args.procedural), Dataset(args.camvid)
    extra = [Dataset(p) for p in args.extra_procedural]
    cache = Path(args.cache) if args.cache else None
    names = args.configs or list(CONFIGS)
    columns = ["procedural test (fit on its train)", "procedural train, 5-fold CV",
               "CamVid train, 5-fold blocked CV", "CamVid val (fit on its train)",
               "cross-domain: fit procedural train -> all CamVid"]
    columns += [f"cross-domain: fit {d.root.parent.parent.name} train -> all CamVid" for d in extra]
    print("cell = time-of-day accuracy / weather accuracy[, dusk recall]\n")
    print("| backend | " + " | ".join(columns) + " | features frames/s (1 thread) |")
    print("|---" * (len(columns) + 2) + "|")
    for name in names:
        sky_p = proc.label_space.index("sky")
        clf = make(name, sky_p)
        xp, fps = features(clf, proc, cache, "procedural")
        xc, _ = features(clf, cam, cache, "camvid")
        cells = []
        xtr, rtr = split(proc, xp, "train")
        xte, rte = split(proc, xp, "test")
        cells.append(cell(summary(rte, fit_predict(make(name, sky_p), xtr, rtr, xte))))
        cells.append(cell(summary(rtr, cross_validate(make(name, sky_p), xtr, truths(rtr), 5))))
        ctr, crtr = split(cam, xc, "train")
        cva, crva = split(cam, xc, "val")
        cells.append(cell(summary(crtr, cross_validate(make(name, sky_p), ctr, truths(crtr), 5))))
        cells.append(cell(summary(crva, fit_predict(make(name, sky_p), ctr, crtr, cva))))
        cells.append(cell(summary(cam.records, fit_predict(make(name, sky_p), xtr, rtr, xc))))
        for i, d in enumerate(extra):
            xd, _ = features(clf, d, cache, f"extra{i}")
            dtr, drtr = split(d, xd, "train")
            cells.append(cell(summary(cam.records, fit_predict(make(name, sky_p), dtr, drtr, xc))))
        print(f"| {name} | " + " | ".join(cells) + f" | {fps:.0f} |", flush=True)


def signs(args) -> None:
    from synthdrive.signs import CLASSES, classifier

    import yaml

    defaults = yaml.safe_load(Path("params.yaml").read_text())["signs"]["train"]
    real_cache: dict = {}
    print("| init | input | epochs | seed | GTSRB dev accuracy | " + " | ".join(f"{c} recall" for c in CLASSES)
          + " | train wall s | train CPU s |")
    print("|---" * (7 + len(CLASSES)) + "|")
    results: dict = {}
    for init in args.inits:
        own = defaults["imagenet"] if init == "imagenet" else defaults  # params.yaml's signs.train
        size = args.size.get(init, int(own["input_size"]))
        epochs = args.epochs.get(init, int(own["epochs"]))
        lr = args.lr.get(init, float(own["lr"]))
        train_set = classifier.load_folder(Path(args.data) / "train", size)
        val_set = classifier.load_folder(Path(args.data) / "val", size)
        if size not in real_cache:
            real_cache[size] = classifier.load_folder(args.real, size)
        real = real_cache[size]
        for seed in args.seeds:
            model = classifier.build_model(seed, init, int(defaults["imagenet"]["variant"]))
            start, cpu = time.perf_counter(), time.process_time()
            classifier.train(model, train_set, val_set, epochs, lr, int(defaults["batch"]), seed)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            s, _ = classifier.evaluate(model, real)
            results.setdefault(init, []).append((s, seconds, cpu))
            rec = " | ".join(f"{s['per_class_recall'][c]:.3f}" for c in CLASSES)
            print(f"| {init} | {size} | {epochs} | {seed} | {s['accuracy']:.4f} | {rec} | {seconds:.0f} | {cpu:.0f} |", flush=True)
    print("\nmean over seeds:")
    for init, runs in results.items():
        acc = np.array([r[0]["accuracy"] for r in runs])
        stop = np.array([r[0]["per_class_recall"]["stop"] for r in runs])
        print(f"- {init}: accuracy {acc.mean():.4f} (min {acc.min():.4f}), stop recall {stop.mean():.3f} "
              f"(min {stop.min():.3f}), {np.mean([r[1] for r in runs]):.0f} s wall / {np.mean([r[2] for r in runs]):.0f} "
              f"CPU-s per run")


def top5(args) -> None:
    from PIL import Image

    from synthdrive import pretrained

    files = sorted(p for p in (Path(args.real) / "stop").iterdir() if p.suffix.lower() == ".png")
    print("| net | weights | input | stop crops with 'street sign' (919) in the top 5 |")
    print("|---|---|---|---|")
    for variant in pretrained.VARIANTS:
        for weights in (True, False):
            net = pretrained.classifier(variant, weights, seed=0).eval()
            for size in (160, pretrained.IMAGENET_SIZE[variant]):
                ims = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC)) for f in files]
                with torch.no_grad():
                    logits = torch.cat([net(pretrained.preprocess(ims[i:i + 16])) for i in range(0, len(ims), 16)])
                hits = int((logits.topk(5, 1).indices == pretrained.STREET_SIGN).any(1).sum())
                print(f"| lite{variant} | {'ImageNet' if weights else 'random'} | {size} | "
                      f"{hits}/{len(files)} ({hits / len(files):.0%}) |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("classify")
    c.add_argument("--procedural", required=True)
    c.add_argument("--camvid", required=True)
    c.add_argument("--extra-procedural", nargs="*", default=[])
    c.add_argument("--configs", nargs="*", choices=list(CONFIGS))
    c.add_argument("--cache")
    s = sub.add_parser("signs")
    s.add_argument("--data", required=True)
    s.add_argument("--real", required=True)
    s.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    s.add_argument("--inits", nargs="*", default=["scratch", "imagenet"])
    s.add_argument("--size", type=lambda v: dict(kv.split("=") for kv in v.split(",")), default={},
                   help="per init input size, e.g. imagenet=64")
    s.add_argument("--epochs", type=lambda v: dict(kv.split("=") for kv in v.split(",")), default={},
                   help="per init epochs, e.g. imagenet=2")
    s.add_argument("--lr", type=lambda v: dict(kv.split("=") for kv in v.split(",")), default={},
                   help="per init learning rate, e.g. imagenet=0.0005")
    t = sub.add_parser("top5")
    t.add_argument("--real", required=True)
    args = ap.parse_args()
    for field in ("size", "epochs", "lr"):
        if hasattr(args, field):
            conv = float if field == "lr" else int
            setattr(args, field, {k: conv(v) for k, v in getattr(args, field).items()})
    {"classify": classify, "signs": signs, "top5": top5}[args.cmd](args)


if __name__ == "__main__":
    main()
