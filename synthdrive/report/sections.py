"""The report's sections: one small function per stage, fed by the files that stage writes.

A section function takes ``Inputs`` and returns the variables of its template
``templates/sections/<name>.html``; adding a stage to the report is one function + one template.
Reading a file that is not there raises ``Missing``, and the section is left out with that
reason (named on the page) instead of showing anything made up.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from synthdrive import labels
from synthdrive.conditions import all_conditions, condition_key, one_per_condition
from synthdrive.dataset import read_jsonl
from synthdrive.report import figures, provenance


class Missing(Exception):
    """A file a section needs is not there (its stage has not run)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


@dataclass
class Inputs:
    """Read access to the pipeline's outputs, recording which files each section used."""

    root: Path
    cfg: dict
    parent_run: str | None = None
    used: list[str] = field(default_factory=list)

    def need(self, rel: str) -> Path:
        path = self.root / rel
        if not path.exists():
            raise Missing(rel)
        if rel not in self.used:
            self.used.append(rel)
        return path

    def has(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def json(self, rel: str) -> Any:
        return json.loads(self.need(rel).read_text())

    def jsonl(self, rel: str) -> list[dict]:
        return read_jsonl(self.need(rel))

    def image(self, rel: str) -> figures.Picture:
        return figures.image(self.need(rel), int(self.cfg["image_max_width"]))

    def optional_image(self, rel: str) -> figures.Picture | None:
        """A picture the section can do without (its numbers still stand)."""
        return self.image(rel) if self.has(rel) else None

    def stages(self) -> set[str]:
        """Stage names in dvc.yaml (foreach/matrix stages by their base name)."""
        path = self.root / "dvc.yaml"
        if not path.is_file():
            return set()
        return set((yaml.safe_load(path.read_text()) or {}).get("stages") or {})


@dataclass
class Section:
    name: str
    title: str
    stage: str
    variables: dict
    sources: list[str]


SectionFn = Callable[[Inputs], dict]
REGISTRY: list[tuple[str, str, str, SectionFn]] = []


def section(name: str, title: str, stage: str) -> Callable[[SectionFn], SectionFn]:
    """Register a section rendered by templates/sections/<name>.html, in page order."""
    def register(fn: SectionFn) -> SectionFn:
        REGISTRY.append((name, title, stage, fn))
        return fn
    return register


def build(inputs: Inputs) -> tuple[list[Section], list[dict]]:
    """Every section whose inputs exist, and for the others why they are left out."""
    sections, left_out = [], []
    declared = inputs.stages()
    for name, title, stage, fn in REGISTRY:
        inputs.used = []
        try:
            variables = fn(inputs)
        except Missing as e:
            why = (f"stage `{stage}` is not in dvc.yaml yet" if stage not in declared
                   else f"{e.path} not found: run `dvc repro {stage}`")
            left_out.append({"title": title, "stage": stage, "reason": why})
            continue
        sections.append(Section(name, title, stage, variables, list(inputs.used)))
    return sections, left_out


def _condition_order(names) -> list[str]:
    known = [str(c) for c in all_conditions()]
    return [c for c in known if c in names] + sorted(set(names) - set(known))


def _condition(record: dict) -> str:
    return condition_key(record, missing="?")


@section("data", "Data", "collect")
def data(inp: Inputs) -> dict:
    records = inp.jsonl("data/raw/index.jsonl")
    meta = inp.json("data/raw/meta.json")
    counts = Counter((_condition(r), r.get("split", "?")) for r in records)
    splits = [s for s in ("train", "val", "test") if any(k[1] == s for k in counts)]
    splits += sorted({k[1] for k in counts} - set(splits))
    conds = _condition_order({k[0] for k in counts})
    table = [{"condition": c, "counts": [counts[(c, s)] for s in splits],
              "total": sum(counts[(c, s)] for s in splits)} for c in conds]
    chart = figures.stacked_barh(conds, {s: [counts[(c, s)] for c in conds] for s in splits},
                                 "frames", f"Frames per condition ({meta.get('source', '?')} source)")
    space = labels.get(meta["label_space"])
    legend = [{"name": n, "rgb": "#%02x%02x%02x" % tuple(c)} for n, c in zip(space.classes, space.colors)]
    grid = inp.optional_image("metrics/collect_samples.png")
    return {"splits": splits, "table": table, "totals": [sum(counts[(c, s)] for c in conds) for s in splits],
            "total": len(records), "chart": chart, "grid": grid, "meta": meta, "legend": legend,
            "index": "data/raw/index.jsonl", "meta_file": "data/raw/meta.json",
            "grid_file": "metrics/collect_samples.png"}


@section("conditions", "Conditions: weather and time-of-day classifier", "classify")
def conditions(inp: Inputs) -> dict:
    metrics_file, rows_file = "metrics/classify.json", "data/conditions.jsonl"
    m = inp.json(metrics_file)
    rows = inp.jsonl(rows_file)
    factors = [f for f in ("weather", "time_of_day") if any(f in s for s in m["splits"].values())]
    used = Counter((r["condition"], r.get("condition_from", "?")) for r in rows)
    origins = sorted({o for _, o in used})
    conds = _condition_order({c for c, _ in used})
    confusion_png = "metrics/classify_confusion.png"
    return {"m": m, "file": metrics_file, "rows_file": rows_file, "factors": factors, "frames": len(rows),
            "origins": origins, "used": [{"condition": c, "counts": [used[(c, o)] for o in origins]}
                                         for c in conds],
            "confusion": inp.optional_image(confusion_png),
            "confusion_file": confusion_png}


@section("captions", "Captions", "caption")
def captions(inp: Inputs) -> dict:
    """Example captions with their frames, one condition after another."""
    import io

    from PIL import Image

    metrics_file, rows_file = "metrics/caption.json", "data/captions.jsonl"
    m = inp.json(metrics_file)
    rows = inp.jsonl(rows_file)
    raw = "data/raw/images"
    inp.need(raw)
    examples = one_per_condition(rows, lambda r: r["condition"], int(inp.cfg["caption_examples"]),
                                 order=_condition_order({r["condition"] for r in rows}))
    for r in examples:
        with Image.open(inp.root / raw / f"{r['id']}.png") as img:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, "PNG")
            r["picture"] = figures.picture(buf.getvalue(), img.width, img.height, min_display_width=256)
    return {"m": m, "file": metrics_file, "rows_file": rows_file, "examples": examples}


def _per_condition(metrics: dict, prefix: str) -> dict[str, dict[str, float]]:
    """{condition: {kind: value}} from flat keys like ``brightness/rain-day/real``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == prefix:
            out.setdefault(parts[1], {})[parts[2]] = value
    return {c: out[c] for c in _condition_order(out)}


@section("generator", "Generator: quality floor", "train_generator")
def generator(inp: Inputs) -> dict:
    metrics_file, grid_file = "metrics/train_generator.json", "metrics/generator_samples.png"
    m = inp.json(metrics_file)
    ratios = _per_condition(m, "brightness_ratio")
    conds = list(ratios)
    chart = (figures.grouped_bars(conds, {k: [ratios[c].get(k) for c in conds] for k in ("real", "generated")},
                                  "brightness / reference condition", "Brightness ratio per condition")
             if conds else None)
    return {"m": m, "file": metrics_file, "ratios": ratios, "brightness": _per_condition(m, "brightness"),
            "chart": chart, "grid": inp.optional_image(grid_file), "grid_file": grid_file}


def _synthesis_tiles(inp: Inputs, per_condition: int) -> tuple[list, list[str]]:
    """Per target condition: source layout | real source frame | synthetic frame."""
    from synthdrive.dataset import Dataset
    from synthdrive.viz import grid

    synthetic, raw = Dataset(inp.need("data/synthetic")), Dataset(inp.need("data/raw"))
    space = synthetic.label_space.name
    picked: dict[str, list[dict]] = {}
    for r in synthetic.records:
        picked.setdefault(r["target_condition"], [])
        if len(picked[r["target_condition"]]) < per_condition:
            picked[r["target_condition"]].append(r)
    tiles, captions = [], []
    for cond in _condition_order(picked):
        for r in picked[cond]:
            tiles += [labels.colorize(synthetic.label(r["id"]), space), raw.image(r["source_id"]),
                      synthetic.image(r["id"])]
            captions += [f"layout {r['source_id'][:16]}", f"real {r['source_condition']}", f"synthetic {cond}"]
    return (grid(tiles, captions, cols=3 * per_condition) if tiles else None), sorted(picked)


@section("synthesis", "Synthesis: synthetic data per target condition", "synthesize")
def synthesis(inp: Inputs) -> dict:
    import io

    from PIL import Image

    metrics_file = "metrics/synthesize.json"
    m = inp.json(metrics_file)
    bright = _per_condition(m, "brightness")
    conds = list(bright)
    chart = (figures.grouped_bars(conds, {k: [bright[c].get(k) for c in conds] for k in ("real", "synthetic")},
                                  "mean grey level", "Brightness: real vs synthetic per condition")
             if conds else None)
    tiles, _ = _synthesis_tiles(inp, int(inp.cfg["synthesis_examples"]))
    picture = None
    if tiles is not None:
        buf = io.BytesIO()
        Image.fromarray(tiles).save(buf, "PNG")
        picture = figures.picture(buf.getvalue(), tiles.shape[1], tiles.shape[0])
    per_target = {c: m["frames_per_target"][c] for c in _condition_order(m["frames_per_target"])}
    return {"m": m, "file": metrics_file, "bright": bright, "chart": chart, "grid": picture,
            "per_target": per_target}


@section("filter", "Filter: semantic consistency of synthetic frames", "filter_synthetic")
def synthetic_filter(inp: Inputs) -> dict:
    metrics_file, histogram = "metrics/filter_synthetic.json", "metrics/filter_synthetic_scores.png"
    m = inp.json(metrics_file)
    per = {c: m["per_condition"][c] for c in _condition_order(m.get("per_condition", {}))}
    return {"m": m, "file": metrics_file, "per": per,
            "histogram": inp.optional_image(histogram)}


def _mean_spread(stat: dict | None) -> tuple[float | None, float | None]:
    return (None, None) if not stat else (stat.get("mean"), stat.get("spread"))


@section("segmentation", "Segmentation: real vs real + synthetic", "evaluate")
def segmentation(inp: Inputs) -> dict:
    metrics_file, grid_file = "metrics/eval.json", "metrics/eval_predictions.png"
    m = inp.json(metrics_file)
    variants = list(m["variants"])
    conds = _condition_order({c for v in m["variants"].values() for c in v["conditions"]})
    groups = ["overall"] + (["rare"] if any("rare" in v for v in m["variants"].values()) else []) + conds

    def stat(variant: str, group: str):
        v = m["variants"][variant]
        return v.get(group) if group in ("overall", "rare") else v["conditions"].get(group)

    rows = [{"group": g, "cells": [_mean_spread(stat(v, g)) for v in variants],
             "gains": [m.get("gains", {}).get(v, {}).get(g) for v in variants[1:]],
             "rare": g in m.get("rare_conditions", [])} for g in groups]
    chart = figures.grouped_bars(groups, {v: [_mean_spread(stat(v, g))[0] for g in groups] for v in variants},
                                 "mIoU (%)", f"mIoU per condition on the {m['split']} split "
                                 f"(mean over {len(m['seeds'])} seed(s); bars: spread)",
                                 errors={v: [_mean_spread(stat(v, g))[1] for g in groups] for v in variants},
                                 fmt="%.1f")
    classes = list(next(iter(m["variants"].values()))["per_class_iou"])
    per_class = [{"name": c, "cells": [m["variants"][v]["per_class_iou"].get(c) for v in variants]}
                 for c in classes]
    return {"m": m, "file": metrics_file, "variants": variants, "rows": rows, "chart": chart,
            "per_class": per_class, "grid": inp.optional_image(grid_file),
            "grid_file": grid_file}


@section("fid", "FID: synthetic vs real frames per condition", "evaluate")
def fid(inp: Inputs) -> dict:
    metrics_file = "metrics/eval.json"
    f = inp.json(metrics_file)["fid"]
    per = f["conditions"]
    conds = _condition_order([c for c in per if c != "all_targets"])
    rows = [{"condition": c, **per[c]} for c in conds]
    if "all_targets" in per:
        rows.append({"condition": "all targets pooled", **per["all_targets"]})
    scored = [r for r in rows if r.get("fid") is not None]
    chart = (figures.grouped_bars([r["condition"] for r in scored], {"FID": [r["fid"] for r in scored]},
                                  "FID (lower = closer to real)", f"FID per target condition ({f['features']})",
                                  fmt="%.1f") if scored else None)
    return {"features": f["features"], "file": metrics_file, "rows": rows, "chart": chart}


@section("signs", "Signs: synthetic training, real test", "train_signs")
def signs(inp: Inputs) -> dict:
    metrics_file = "metrics/signs.json"
    m = inp.json(metrics_file)
    classes = m["confusion"]["rows_true_cols_pred"]
    rows = [{"kind": f"test: {m['test_set']['kind']}", "after": m}]
    rows += [{"kind": kind, "after": m[key]} for key, kind in
             (("synthetic_val", "synthetic validation"), ("procedural_shifted", "procedural, style-shifted"))
             if key in m]
    return {"m": m, "file": metrics_file, "classes": classes, "rows": rows,
            "confusion": figures.confusion(m["confusion"]["matrix"], classes,
                                           f"Confusion on the test set ({m['test_set']['kind']})"),
            "wrong": inp.optional_image("metrics/signs_misclassified.png"),
            "loss": inp.optional_image("metrics/signs_loss.png"),
            "samples": inp.optional_image("metrics/sign_samples.png")}


@section("timings", "Timings: wall time per stage", "report")
def timings(inp: Inputs) -> dict:
    result = provenance.timings(inp.parent_run)
    chart = (figures.timeline([t.stage for t in result.stages], [t.seconds for t in result.stages],
                              "Latest finished run of each stage") if result.stages else None)
    return {"timings": result, "chart": chart, "total": sum(t.seconds for t in result.stages)}


@section("experiments", "Experiments", "report")
def experiments(inp: Inputs) -> dict:
    return {"exps": provenance.experiments(inp.root, int(inp.cfg["experiment_metric_columns"]),
                                           list(inp.cfg["headline_metrics"]))}
