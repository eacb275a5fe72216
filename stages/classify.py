"""classify: every frame of data/raw -> predicted weather and time of day (data/conditions.jsonl),
with accuracy and confusion matrices where the source knows the truth (metrics/classify.json).

Every backend turns each frame into features once (synthdrive.classify.base.Classifier); the ones
fit on known truth (heuristic, effnet) are fit on the train split, so their train numbers are fit,
not test, accuracy; "train_cv" holds held-out predictions from cross-validation on that split."""
import time
from pathlib import Path

import numpy as np

from synthdrive import params, tracking
from synthdrive.classify import (FACTORS, cross_validate, evaluate, make_classifier, map_frames,
                                 plot_confusions, truth_of)
from synthdrive.conditions import USES, resolve
from synthdrive.dataset import SPLITS, Dataset, atomic_dir, write_json, write_jsonl
from synthdrive.errors import run_stage

RAW = Path("data/raw")
OUT = Path("data/conditions.jsonl")
MODELS = Path("models/classify")
METRICS = Path("metrics/classify.json")
CONFUSION = Path("metrics/classify_confusion.png")


def main() -> None:
    cfg = params.load("classify")
    use = cfg.choice("use", USES)
    with tracking.stage_run("classify") as run:
        start = time.time()
        dataset = Dataset(RAW)
        clf = make_classifier(cfg, dataset)
        metrics: dict = {"backend": clf.name, "use": use, "splits": {}}
        batch = int(cfg["batch_size"])
        with atomic_dir(MODELS) as model_dir:
            # features once per frame, for fit, cross-validation and predict
            x_all = np.stack(map_frames(dataset, dataset.records, clf.features, batch, "features"))
            if clf.needs_fit:
                rows = [i for i, r in enumerate(dataset.records)
                        if r["split"] == "train" and any(r.get(f) for f in FACTORS)]
                train, x = [dataset.records[i] for i in rows], x_all[rows]
                truths = {f: [r.get(f) for r in train] for f in FACTORS}
                folds = int(cfg[f"{clf.name}.cv_folds"])
                if folds > 1 and len(train) >= folds:
                    metrics["splits"]["train_cv"] = evaluate(train, cross_validate(clf, x, truths, folds))
                clf.fit_features(x, truths)
                metrics["fit_frames"] = len(train)
            clf.save(model_dir)
            predictions = clf.predict_features(x_all)

        rows = []
        for r, p in zip(dataset.records, predictions):
            condition, origin = resolve(r, p, use)
            truth = truth_of(r)
            rows.append({"id": r["id"], "split": r["split"], "weather": p["weather"],
                         "time_of_day": p["time_of_day"], "scores": p["scores"],
                         "truth": truth if any(truth.values()) else None,
                         "condition": str(condition), "condition_from": origin,
                         "use": use, "backend": clf.name})
        write_jsonl(OUT, rows)

        for split in SPLITS:
            idx = [i for i, r in enumerate(dataset.records) if r["split"] == split]
            result = evaluate([dataset.records[i] for i in idx], [predictions[i] for i in idx])
            if result:
                metrics["splits"][split] = result
        metrics["predicted_counts"] = {
            f: {v: int(np.sum([p[f] == v for p in predictions])) for v in values}
            for f, values in FACTORS.items()}
        metrics["seconds"] = round(time.time() - start, 1)
        write_json(METRICS, metrics)
        plot_confusions(metrics["splits"], CONFUSION)
        flat = {f"{split}.{f}_accuracy": m[f]["accuracy"]
                for split, m in metrics["splits"].items() for f in FACTORS if f in m}
        run.log_metrics(flat)
        run.log_parent_metrics({f"classify.{k}": v for k, v in flat.items() if k.startswith("test.")})
        run.log_artifact(METRICS)
        run.log_artifact(CONFUSION)
        print(f"classify ({clf.name}, use={use}): {len(rows)} frames -> {OUT}; "
              + ", ".join(f"{k} {v:.1%}" for k, v in flat.items()) + f"; {METRICS}, {CONFUSION}")


if __name__ == "__main__":
    run_stage(main)
