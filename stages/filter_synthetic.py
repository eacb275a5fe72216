"""filter_synthetic: the semantic-consistency filter of synthetic frames -> data/synthetic_filter.json.

The real-only segmenter (train_segmenter@real-<first seed>) segments each synthetic image; a frame
whose prediction disagrees with its own layout (mIoU below filter_synthetic.min_miou) is dropped.
It sits between synthesize and train_segmenter_synth because it needs a segmenter trained on real
data only and real_synth must train on the kept set; a separate stage makes its threshold a
param that reruns only the filter and real_synth, and leaves its scores on disk to inspect.
"""
from pathlib import Path


from synthdrive import labels, params, tracking
from synthdrive.compute import set_threads
from synthdrive.dataset import write_json
from synthdrive.errors import UserError, run_stage
from synthdrive.segment.evaluate import load_segmenter, semantic_filter
from synthdrive.segment.plots import score_histogram

SYNTHETIC = Path("data/synthetic")
OUT = Path("data/synthetic_filter.json")
METRICS = Path("metrics/filter_synthetic.json")
HISTOGRAM = Path("metrics/filter_synthetic_scores.png")


def main() -> None:
    p = params.load()
    cfg = p["filter_synthetic"]
    seed = p["segmenter.seeds"][0]
    space = labels.get(p["labels.space"])
    ignore_ids = [space.index(c) for c in cfg["ignore_classes"]]
    set_threads(cfg["threads"])
    with tracking.stage_run("filter_synthetic") as run:
        model = load_segmenter(Path("models/segmenter") / f"real-{seed}")
        result = semantic_filter(model, SYNTHETIC, float(cfg["min_miou"]), int(cfg["batch_size"]))
        if not result["kept"]:
            raise UserError(f"params.yaml: filter_synthetic.min_miou={cfg['min_miou']} keeps no synthetic "
                            f"frame (best score {max(result['scores'].values())}); lower it")
        write_json(OUT, {**result, "ignore_class_ids": ignore_ids, "ignore_classes": list(cfg["ignore_classes"]),
                         "model": f"models/segmenter/real-{seed}"})
        metrics = {k: v for k, v in result.items() if k not in ("kept", "scores")}
        metrics["kept_frames"] = len(result["kept"])
        write_json(METRICS, metrics)
        score_histogram(list(result["scores"].values()), float(cfg["min_miou"]), HISTOGRAM)
        run.log_metrics({k: v for k, v in metrics.items() if k != "synthetic_per_class_iou"})
        run.log_artifact(HISTOGRAM)
        print(f"filter_synthetic: kept {len(result['kept'])}/{result['frames']} synthetic frames "
              f"(mIoU vs layout >= {cfg['min_miou']}; mean {result['mean_score']}) -> {OUT}")


if __name__ == "__main__":
    run_stage(main)
