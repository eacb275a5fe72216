"""Render planned synthetic frames: source layouts in target conditions, in the dataset format.

Each frame's label is its source layout (at the dataset's size); its image is the generator's
render at the generator's size, resized to the dataset's. Records name the source layout and
condition, the target condition (also their weather / time_of_day), the prompt and the seed.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from synthdrive import viz
from synthdrive.conditions import Condition
from synthdrive.dataset import Dataset, DatasetWriter
from synthdrive.generate import Generator
from synthdrive.generate.data import resize_image, resize_layout
from synthdrive.generate.floor import brightness
from synthdrive.labels import IGNORE
from synthdrive.prompts import condition_phrase, retarget
from synthdrive.synthesize.planner import Job

MIN_CLASS_SHARE = 0.005  # classes covering less of the layout are not demanded in the prompt


def prompt_for(job: Job, caption: dict | None, layout: np.ndarray, classes: Sequence[str]) -> str:
    """The caption retargeted to the job's condition (SynDiff-AD's caption editing) plus
    "Must contain <classes>" for the classes the layout shows."""
    if caption:
        source = Condition.parse(caption["condition"]) if caption.get("condition") else job.source_condition
        text = retarget(caption["caption"], source, job.target_condition)
    else:
        text = f"A street scene {condition_phrase(job.target_condition)}."
    ids, counts = np.unique(layout[layout != IGNORE], return_counts=True)
    present = [classes[i] for i, n in zip(ids, counts) if i < len(classes) and n >= MIN_CLASS_SHARE * layout.size]
    if present:
        text = f"{text.rstrip()} Must contain {', '.join(c.replace('_', ' ') for c in present)}."
    return text


def synthesize(generator: Generator, raw: Dataset, jobs: list[Job], captions: dict[str, dict],
               out: str | Path, batch_size: int, **sampler) -> Dataset:
    """Render ``jobs`` into a new dataset at ``out`` (atomically)."""
    height, width = raw.meta.get("height"), raw.meta.get("width")
    classes = raw.label_space.classes
    with DatasetWriter(out, raw.label_space.name, source="synthetic", backend=generator.backend,
                       height=height, width=width) as writer:
        for start in tqdm(range(0, len(jobs), batch_size), desc=f"synthesize {generator.backend}",
                          unit="batch"):
            batch = jobs[start:start + batch_size]
            labels = [raw.label(j.source_id) for j in batch]
            prompts = [prompt_for(j, captions.get(j.source_id), lab, classes) for j, lab in zip(batch, labels)]
            small = np.stack([resize_layout(lab, *generator.size) for lab in labels])
            images = generator.sample(small, [j.target_condition for j in batch], [j.seed for j in batch],
                                      prompts=prompts, **sampler)
            for job, label, image, prompt in zip(batch, labels, images, prompts):
                writer.add({"id": f"syn_{job.index:06d}", "split": "train",
                            "weather": job.target_condition.weather,
                            "time_of_day": job.target_condition.time_of_day,
                            "source": "synthetic", "backend": generator.backend,
                            "source_id": job.source_id, "source_condition": str(job.source_condition),
                            "target_condition": str(job.target_condition), "prompt": prompt,
                            "seed": job.seed},
                           resize_image(image, *label.shape), label)
    return Dataset(out)


def brightness_report(synthetic: Dataset, raw: Dataset, conditions: dict[str, Condition]) -> dict:
    """Mean grey per condition of the synthetic frames beside the real train frames'."""
    synth, real = defaultdict(list), defaultdict(list)
    for r in synthetic.records:
        synth[r["target_condition"]].append(synthetic.image(r["id"]))
    for fid, c in conditions.items():
        if str(c) in synth:
            real[str(c)].append(raw.image(fid))
    out = {}
    for c, images in sorted(synth.items()):
        out[f"brightness/{c}/synthetic"] = brightness(np.stack(images))
        if real[c]:
            out[f"brightness/{c}/real"] = brightness(np.stack(real[c]))
    return out


def condition_grid(synthetic: Dataset, path: str | Path, per_condition: int = 3) -> Path:
    """Per target condition a row of synthetic images, each beside its layout."""
    rows = defaultdict(list)
    for r in synthetic.records:
        if len(rows[r["target_condition"]]) < per_condition:
            rows[r["target_condition"]].append(r)
    tiles, captions = [], []
    for cond in sorted(rows):
        for r in rows[cond] + [None] * (per_condition - len(rows[cond])):
            if r is None:
                tiles.append(np.full_like(tiles[-1], 255))
                captions.append("")
                continue
            tiles.append(viz.side_by_side(synthetic.image(r["id"]), synthetic.label(r["id"]),
                                          synthetic.label_space.name))
            captions.append(f"{cond} from {r['source_condition']} {r['source_id'][:14]}")
    return viz.save_png(viz.grid(tiles, captions, cols=per_condition), path)
