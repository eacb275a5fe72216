"""Driving conditions: a (weather, time of day) pair, the unit every stage reports by."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from synthdrive.errors import UserError
from synthdrive.params import ParamError

WEATHERS = ("clear", "cloudy", "rain", "fog")
TIMES_OF_DAY = ("day", "dusk", "night")


class Condition(NamedTuple):
    weather: str
    time_of_day: str

    def __str__(self) -> str:
        return f"{self.weather}-{self.time_of_day}"

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """'rain-night' -> Condition('rain', 'night'), with an error naming the valid values."""
        weather, sep, time_of_day = text.partition("-")
        if not sep or weather not in WEATHERS or time_of_day not in TIMES_OF_DAY:
            raise ValueError(f"bad condition {text!r}: write WEATHER-TIME with WEATHER in "
                             f"{WEATHERS} and TIME in {TIMES_OF_DAY}, e.g. 'rain-night'")
        return cls(weather, time_of_day)


def condition_key(record: dict, missing: str | None = None) -> str:
    """A frame record's condition as its key ('rain-night'); ``missing`` stands in for a factor
    the record lacks (default: KeyError)."""
    if missing is None:
        return str(Condition(record["weather"], record["time_of_day"]))
    return str(Condition(record.get("weather", missing), record.get("time_of_day", missing)))


def rare_conditions(train_conditions: Iterable[str], setting="auto") -> list[str]:
    """The rare subgroups (the ones a synthesizer targets, real_aug shifts to and evaluate reports
    as rare): a list of condition keys, or "auto" = every condition of ``train_conditions`` (one
    key per real train frame) except the most frequent one."""
    if setting != "auto":
        return [str(Condition.parse(c)) for c in setting]
    counts = Counter(train_conditions)
    common = counts.most_common(1)[0][0] if counts else None
    return sorted(c for c in counts if c != common)


def one_per_condition(items: Iterable, condition_of: Callable, n: int, order: Iterable[str] = ()) -> list:
    """Up to ``n`` of ``items``, one condition after another (first-seen order, or ``order``
    first), for sample grids and examples that should show every condition."""
    groups: dict[str, list] = {c: [] for c in order}
    for item in items:
        groups.setdefault(condition_of(item), []).append(item)
    queues = [list(g) for g in groups.values() if g]
    picked: list = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def weighted_mix(mix, param: str) -> dict[Condition, float]:
    """A {condition: weight} param (train_mix, target_mix, signs.data.conditions) as
    probabilities. Weight 0 leaves a condition out: `dvc exp run -S` merges a mapping into the
    default one, so zeroing a key is how an override drops it."""
    mix = dict(mix.items()) if hasattr(mix, "items") else {}
    if not mix:
        raise ParamError(f"params.yaml: {param} must map conditions to weights >= 0, "
                         f"e.g. {{clear-day: 0.7, rain-night: 0.3}}")
    weights = {}
    for name, weight in mix.items():
        try:
            condition = Condition.parse(str(name))
        except ValueError as e:
            raise ParamError(f"params.yaml: {param}: {e}") from None
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ParamError(f"params.yaml: {param}: weight of {name!r} is {weight!r}; use a number "
                             f">= 0 (0 leaves the condition out)")
        if weight > 0:
            weights[condition] = float(weight)
    if not weights:
        raise ParamError(f"params.yaml: {param}: every weight is 0; give at least one condition a weight > 0")
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


def all_conditions() -> list[Condition]:
    return [Condition(w, t) for w in WEATHERS for t in TIMES_OF_DAY]


USES = ("auto", "truth", "predicted")


def resolve(record: dict, prediction: dict | None, use: str) -> tuple[Condition, str]:
    """A frame's condition for downstream stages, and where it came from.

    ``use``: ``auto`` = per factor the source's truth when it knows it, else the classifier's
    prediction; ``truth`` = the truth only; ``predicted`` = the prediction only.
    Returns (condition, "truth" | "predicted" | "mixed").
    """
    if use not in USES:
        raise ValueError(f"use={use!r}; choose one of {USES} (param classify.use)")
    values, origins = [], set()
    for factor in Condition._fields:
        truth = record.get(factor)
        predicted = (prediction or {}).get(factor)
        if use != "predicted" and truth is not None:
            values.append(truth)
            origins.add("truth")
        elif use != "truth" and predicted is not None:
            values.append(predicted)
            origins.add("predicted")
        else:
            wanted = "known" if use == "truth" else "predicted"
            raise UserError(f"frame {record.get('id')}: no {wanted} {factor} with classify.use="
                            f"{use!r}; set classify.use to 'auto' (or rerun classify)")
    return Condition(*values), origins.pop() if len(origins) == 1 else "mixed"


def frame_conditions(records: list[dict], conditions_jsonl_path, use: str) -> dict[str, Condition]:
    """{frame id: Condition} for ``records`` from the classify stage's data/conditions.jsonl."""
    path = Path(conditions_jsonl_path)
    if not path.is_file():
        raise UserError(f"{path}: not found; run the classify stage first (dvc repro classify)")
    predictions = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            p = json.loads(line) if line.strip() else None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e.msg}); rerun the classify stage")
        if p:
            predictions[p["id"]] = p
    out = {}
    for r in records:
        if r["id"] not in predictions and use != "truth":
            raise UserError(f"{conditions_jsonl_path}: no prediction for frame {r['id']}; "
                            f"rerun the classify stage on this dataset")
        out[r["id"]] = resolve(r, predictions.get(r["id"]), use)[0]
    return out
