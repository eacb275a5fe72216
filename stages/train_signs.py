"""train_signs: a classifier on synthetic signs -> models/signs/, scored on real photos -> metrics/signs.json.

``signs.train.init``: ``scratch`` (ResNet18, random init, 32x32 crops) or ``imagenet`` (the
ImageNet-pretrained EfficientNet-Lite with a new 2-class head, crops upscaled to
``signs.train.imagenet.input_size``).

The test set is the real folder ``signs.real_dir`` (stop/ and warning/ subfolders) when set,
else the style-shifted procedural set from sign_data; metrics/signs.json says which.
"""
import time
from pathlib import Path


from synthdrive import params, tracking
from synthdrive.compute import set_threads
from synthdrive.dataset import atomic_dir, write_json
from synthdrive.errors import run_stage
from synthdrive.params import ParamError
from synthdrive.signs import classifier

DATA = Path("data/signs")
OUT = Path("models/signs")
METRICS = Path("metrics/signs.json")
LOSS_PNG = Path("metrics/signs_loss.png")
WRONG_PNG = Path("metrics/signs_misclassified.png")


def test_set(real_dir: str) -> tuple[Path, dict]:
    """The folder to score on and how metrics/signs.json describes it."""
    if not real_dir:
        return DATA / "shifted", {"kind": "procedural_shifted", "path": str(DATA / "shifted"),
                                  "note": "signs.real_dir is empty: style-shifted procedural signs, "
                                          "not real photos"}
    path = params.resolve_path(real_dir)
    if not (path / "stop").is_dir() or not (path / "warning").is_dir():
        raise ParamError(f"params.yaml: signs.real_dir={real_dir!r} -> {path} has no stop/ and warning/ "
                         f"subfolders; point it at such a folder or set it to '' for the procedural test")
    return path, {"kind": "real", "path": str(path.resolve())}


def main() -> None:
    p = params.load("signs")
    cfg = p["train"]
    real_dir = p["real_dir"] or ""
    set_threads(cfg["threads"])
    init = cfg.choice("init", classifier.INITS)
    own = cfg["imagenet"] if init == "imagenet" else cfg  # input_size, epochs, lr of this init
    variant = int(cfg["imagenet.variant"]) if init == "imagenet" else 0
    size, epochs, lr = int(own["input_size"]), int(own["epochs"]), float(own["lr"])
    seed = int(cfg["seed"])
    test_path, test_info = test_set(real_dir)
    with tracking.stage_run("train_signs") as run:
        train_set = classifier.load_folder(DATA / "train", size)
        val_set = classifier.load_folder(DATA / "val", size)
        test = classifier.load_folder(test_path, size)
        model = classifier.build_model(seed, init, variant)
        before, _ = classifier.evaluate(model, test)
        print(f"train_signs: {classifier.arch_name(init, variant)} ({init}) at {size}x{size}; "
              f"before training, accuracy {before['accuracy']:.3f} on {test_info['kind']} "
              f"({len(test)} images)")
        start = time.time()

        def on_epoch(epoch, entry):
            run.log_metrics({"train_loss": entry["train_loss"], "val_accuracy": entry["val_accuracy"]}, step=epoch)
            print(f"train_signs: epoch {epoch} loss {entry['train_loss']:.4f} "
                  f"synthetic val accuracy {entry['val_accuracy']:.3f}", flush=True)

        history = classifier.train(model, train_set, val_set, epochs, lr, int(cfg["batch"]), seed, on_epoch)
        seconds = time.time() - start
        after, preds = classifier.evaluate(model, test)
        metrics = {"test_set": test_info, **after, "before_training": before,
                   "synthetic_val": classifier.evaluate(model, val_set)[0],
                   "train": {"images": len(train_set), "epochs": epochs, "seconds": round(seconds, 1),
                             "init": init, "arch": classifier.arch_name(init, variant), "input_size": size}}
        if test_info["kind"] == "real":  # the procedural held-out style, for comparison
            metrics["procedural_shifted"] = classifier.evaluate(model, classifier.load_folder(DATA / "shifted", size))[0]
        with atomic_dir(OUT) as tmp:
            classifier.save(model, tmp, {"input_size": size, "init": init, "trained_on": str(DATA / "train")},
                            arch=classifier.arch_name(init, variant))
        classifier.loss_curve(history, LOSS_PNG)
        metrics["misclassified"] = classifier.misclassified_grid(test, preds, WRONG_PNG)
        write_json(METRICS, metrics)
        run.log_metrics({"accuracy": after["accuracy"], "before_training_accuracy": before["accuracy"],
                         "recall": after["per_class_recall"], "train_seconds": seconds})
        run.log_parent_metrics({"signs_accuracy": after["accuracy"]})
        for path in (METRICS, LOSS_PNG, WRONG_PNG):
            run.log_artifact(path)
        recall = ", ".join(f"{k} {v:.3f}" for k, v in after["per_class_recall"].items() if v is not None)
        print(f"train_signs: accuracy {after['accuracy']:.3f} (recall {recall}) on {test_info['kind']} "
              f"{test_info['path']}; before training {before['accuracy']:.3f}; {seconds:.0f} s -> {METRICS}")


if __name__ == "__main__":
    run_stage(main)
