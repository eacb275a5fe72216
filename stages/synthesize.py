"""synthesize: layouts of common-condition train frames rendered in rarer target conditions by
the trained generator -> data/synthetic (dataset format), a grid per target condition, and
metrics (counts and brightness per condition) in metrics/synthesize.json."""
import time
from pathlib import Path

from synthdrive import generate, params, tracking
from synthdrive.conditions import USES, frame_conditions
from synthdrive.dataset import Dataset, read_jsonl, write_json
from synthdrive.errors import run_stage
from synthdrive.synthesize import brightness_report, condition_grid, synthesize
from synthdrive.synthesize.planner import plan, shard, target_mix

RAW = Path("data/raw")
CONDITIONS = Path("data/conditions.jsonl")
CAPTIONS = Path("data/captions.jsonl")
MODEL = Path("models/generator")
OUT = Path("data/synthetic")
METRICS = Path("metrics/synthesize.json")
GRID = Path("metrics/synthesize_samples.png")


def main() -> None:
    p = params.load()
    cfg, use = p["synthesize"], p.choice("classify.use", USES)
    with tracking.stage_run("synthesize") as run:
        raw = Dataset(RAW)
        train = raw.split("train")
        conditions = frame_conditions(train, CONDITIONS, use)
        generator = generate.load(MODEL)
        mix = target_mix(cfg["target_mix"], conditions.values())
        jobs = plan(conditions, cfg["count"], mix, cfg["source_min_share"], cfg["seed"])
        jobs = shard(jobs, cfg["shard_index"], cfg["shard_count"])
        captions = {r["id"]: r for r in read_jsonl(CAPTIONS)} if CAPTIONS.is_file() else {}
        sampler = cfg.get(generator.backend, {}).to_dict()
        start = time.time()
        synthetic = synthesize(generator, raw, jobs, captions, OUT, cfg["batch_size"], **sampler)
        seconds = time.time() - start
        per_target: dict[str, int] = {}
        for r in synthetic.records:
            per_target[r["target_condition"]] = per_target.get(r["target_condition"], 0) + 1
        metrics = {"frames": len(synthetic), "frames_per_target": per_target, "backend": generator.backend,
                   "images_per_s": len(synthetic) / max(seconds, 1e-9),
                   **brightness_report(synthetic, raw, conditions)}
        write_json(METRICS, metrics)
        run.log_metrics(metrics)
        run.log_parent_metrics({"synthetic_frames": len(synthetic)})
        if len(synthetic):
            condition_grid(synthetic, GRID)
            run.log_artifact(GRID)
        run.log_artifact(METRICS)
        print(f"synthesize: {len(synthetic)} frames {per_target} -> {OUT}; grid {GRID}")


if __name__ == "__main__":
    run_stage(main)
