"""The default captioner: a condition-free English description built from the label map.

Classes present, largest first; where each is (left / ahead / right / both sides, from which
thirds of the frame hold its pixels); near or far for objects (median depth when the dataset
has depth/, else how low in the frame they sit); counts from the record's ``instances`` when
the source gives them, by their own names ("a stop sign" where camvid11 only has 'sign'), else
"a car" for a single blob of car pixels and "cars" for more. The words come from the labels
only, so a description never mentions weather or time: the condition phrase is added
separately (synthdrive.prompts).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from synthdrive import labels
from synthdrive.labels import IGNORE, LabelSpace

# Mass nouns and whole surfaces: "the road", not "roads".
SURFACES = {"road", "sky", "pavement", "sidewalk", "terrain", "vegetation", "grass", "ground",
            "water", "curb"}
# Countable objects: these get near/far and instance counts.
THINGS = {"car", "truck", "bus", "train", "motorcycle", "bicycle", "bicyclist", "rider", "person",
          "pedestrian", "pole", "sign", "traffic_sign", "traffic_light", "stop_sign",
          "warning_sign"}
IRREGULAR_PLURALS = {"person": "people", "bus": "buses", "pavement": "pavement",
                     "vegetation": "vegetation", "fence": "fences"}
NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def noun(name: str) -> str:
    return name.replace("_", " ")


def plural(name: str) -> str:
    if name in IRREGULAR_PLURALS:
        return noun(IRREGULAR_PLURALS[name])
    word = noun(name)
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


def blobs(mask: np.ndarray) -> int | None:
    """1 when the class is one connected blob, else None (touching objects merge: no count)."""
    return 1 if ndimage.label(mask)[1] == 1 else None


def counted(name: str, count: int | None) -> str:
    """'a car', 'two cars'; 'cars' when the count is unknown."""
    if count is None:
        return plural(name)
    number = NUMBERS[count] if count < len(NUMBERS) else str(count)
    if count == 1:
        return f"{'an' if noun(name)[0] in 'aeiou' else 'a'} {noun(name)}"
    return f"{number} {plural(name)}"


def place(mask: np.ndarray, name: str) -> str:
    """'on the left' / 'ahead' / 'on the right' / 'on both sides' / 'across the view'."""
    if name == "sky":
        return "above"
    cols = mask.sum(0)
    thirds = np.array([c.sum() for c in np.array_split(cols, 3)], float)
    share = thirds / max(thirds.sum(), 1)
    if share.max() >= 0.5:
        return ("on the left", "ahead", "on the right")[int(share.argmax())]
    if share[0] >= 0.25 and share[2] >= 0.25 and share[1] == share.min():
        return "on both sides"
    if share[1] >= 0.35:
        return "ahead"
    return "across the view"


def distance(mask: np.ndarray, depth: np.ndarray | None, near_m: float, far_m: float) -> str:
    """'nearby' / 'in the distance' / '' for an object's pixels."""
    if depth is not None:
        d = float(np.median(depth[mask]))
        return "nearby" if d < near_m else "in the distance" if d > far_m else ""
    # No depth: on a flat road nearer objects stand lower in the frame.
    row = float(np.median(np.nonzero(mask)[0])) / mask.shape[0]
    return "nearby" if row > 0.75 else "in the distance" if row < 0.55 else ""


def instance_classes(instances: dict[str, int], space: LabelSpace) -> dict[str, dict[str, int]]:
    """{class of ``space``: {instance name: count}}: names the space merges (a procedural
    'stop_sign' inside camvid11's 'sign') go under the class the label tables map them to."""
    grouped: dict[str, dict[str, int]] = {}
    for name, count in instances.items():
        target = name if name in space.classes else None
        for source in labels.names():
            if target is None and source != space.name and name in labels.get(source).classes:
                try:
                    idx = int(labels.lookup(source, space.name)[labels.get(source).index(name)])
                except labels.LabelSpaceError:  # no table from that space
                    continue
                target = space.classes[idx] if idx != IGNORE else None
        if target is not None and count > 0:
            grouped.setdefault(target, {})[name] = int(count)
    return grouped


def objects_phrase(name: str, mask: np.ndarray, counts: dict[str, int] | None) -> str:
    """'two cars', 'a stop sign and a warning sign', or from the pixels alone 'a car' / 'cars'."""
    if not counts:
        return counted(name, blobs(mask))
    items = [counted(n, c) for n, c in counts.items()]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(label: np.ndarray, space: LabelSpace, depth: np.ndarray | None = None,
             instances: dict[str, int] | None = None, min_area: float = 0.005,
             max_classes: int = 7, near_m: float = 12.0, far_m: float = 40.0) -> str:
    """One sentence naming what is where in the frame, largest classes first."""
    valid = label != IGNORE
    total = max(int(valid.sum()), 1)
    ids, counts = np.unique(label[valid], return_counts=True)
    present = [(space.classes[i], c / total) for i, c in zip(ids, counts) if c / total >= min_area]
    present.sort(key=lambda x: -x[1])
    grouped = instance_classes(instances or {}, space)
    parts = []
    for name, _ in present[:max_classes]:
        mask = label == space.index(name)
        where = place(mask, name)
        if name in THINGS:
            what = objects_phrase(name, mask, grouped.get(name))
            extra = distance(mask, depth, near_m, far_m)
            parts.append(" ".join(x for x in (what, where, extra) if x))
        elif name in SURFACES:
            parts.append(f"the {noun(name)} {where}")
        else:
            parts.append(f"{plural(name)} {where}")
    if not parts:
        return "A street scene."
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"A street scene with {body}."
