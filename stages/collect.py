"""collect: labelled driving frames -> data/raw (train/val/test), from the source in params."""
from pathlib import Path

from synthdrive import params, tracking, viz
from synthdrive.collect import collect
from synthdrive.conditions import condition_key
from synthdrive.errors import run_stage

OUT = Path("data/raw")
GRID = Path("metrics/collect_samples.png")


def main() -> None:
    p = params.load(paths="collect")  # the schema, and collect.folder.path exists (source folder)
    cfg = p["collect"]
    with tracking.stage_run("collect") as run:
        dataset = collect(cfg, label_space=p["labels.space"], out=OUT)
        counts = {split: len(dataset.split(split)) for split in ("train", "val", "test")}
        per_condition: dict[str, int] = {}
        for r in dataset.records:
            key = condition_key(r)
            per_condition[key] = per_condition.get(key, 0) + 1
        run.log_metrics({"frames": counts, "frames_per_condition": per_condition})
        viz.dataset_grid(dataset, GRID, per_condition=1, cols=3)
        run.log_artifact(GRID)
        print(f"collect: {len(dataset)} frames {counts} -> {OUT}; sample grid {GRID}")


if __name__ == "__main__":
    run_stage(main)
