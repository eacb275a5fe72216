"""sign_data: synthetic stop and warning sign crops -> data/signs/{train,val,shifted}/{stop,warning}/."""
from pathlib import Path

import numpy as np

from synthdrive import params, tracking, viz
from synthdrive.dataset import read_jsonl, read_png
from synthdrive.errors import run_stage
from synthdrive.signs import CLASSES
from synthdrive.signs.data import make_sign_data

OUT = Path("data/signs")
GRID = Path("metrics/sign_samples.png")


def sample_grid(root: Path, path: Path, per_class: int = 12) -> None:
    """Rows: train stop, train warning, shifted stop, shifted warning (x3, captioned by condition)."""
    records = read_jsonl(root / "index.jsonl")
    tiles, captions = [], []
    for split in ("train", "shifted"):
        for kind in CLASSES:
            for r in [r for r in records if r["split"] == split and r["label"] == kind][:per_class]:
                tiles.append(np.kron(read_png(root / r["file"], "RGB"), np.ones((3, 3, 1), np.uint8)))
                captions.append(r["condition"])
    viz.save_png(viz.grid(tiles, captions, cols=per_class), path)


def main() -> None:
    cfg = params.load("signs.data")
    with tracking.stage_run("sign_data") as run:
        counts = make_sign_data(cfg, OUT)
        run.log_metrics({"images_per_class": counts})
        sample_grid(OUT, GRID)
        run.log_artifact(GRID)
        print(f"sign_data: {counts} images per class ({cfg['backend']}) -> {OUT}; samples {GRID}")


if __name__ == "__main__":
    run_stage(main)
