"""caption: every frame of data/raw -> a condition-free description and a caption with the
frame's condition phrase (data/captions.jsonl), the condition taken per classify.use."""
import time
from pathlib import Path

from tqdm import tqdm

from synthdrive import params, tracking
from synthdrive.caption import batches, caption_text, make_captioner
from synthdrive.conditions import USES, frame_conditions, resolve
from synthdrive.dataset import Dataset, read_jsonl, write_json, write_jsonl
from synthdrive.errors import run_stage

RAW = Path("data/raw")
CONDITIONS = Path("data/conditions.jsonl")
OUT = Path("data/captions.jsonl")
METRICS = Path("metrics/caption.json")


def main() -> None:
    p = params.load()
    cfg = p["caption"]
    use = p["classify"].choice("use", USES)
    with tracking.stage_run("caption") as run:
        start = time.time()
        dataset = Dataset(RAW)
        conditions = frame_conditions(dataset.records, CONDITIONS, use)
        predicted = {r["id"]: r for r in read_jsonl(CONDITIONS)}
        captioner = make_captioner(cfg, dataset)
        rows = []
        size = int(cfg["batch_size"])
        with tqdm(total=len(dataset.records), desc=f"caption ({captioner.name})", unit="frame") as bar:
            for chunk in batches(dataset.records, size):
                for r, description in zip(chunk, captioner.describe(chunk)):
                    condition = conditions[r["id"]]
                    rows.append({"id": r["id"], "split": r["split"], "description": description,
                                 "caption": caption_text(description, condition),
                                 "condition": str(condition),
                                 "condition_from": resolve(r, predicted.get(r["id"]), use)[1],
                                 "use": use, "backend": captioner.name})
                bar.update(len(chunk))
        write_jsonl(OUT, rows)
        words = [len(r["description"].split()) for r in rows]
        metrics = {"backend": captioner.name, "use": use, "frames": len(rows),
                   "mean_words": round(sum(words) / max(len(words), 1), 1),
                   "distinct_descriptions": len({r["description"] for r in rows}),
                   "seconds": round(time.time() - start, 1),
                   "examples": [r["caption"] for r in rows[:: max(1, len(rows) // 5)][:5]]}
        write_json(METRICS, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if k != "examples"})
        run.log_artifact(OUT)
        print(f"caption ({captioner.name}): {len(rows)} frames -> {OUT}; e.g. {rows[0]['caption']!r}"
              if rows else f"caption: no frames in {RAW}")


if __name__ == "__main__":
    run_stage(main)
