"""Print metrics/eval.json as the markdown tables experiments/README.md quotes, so every number
there can be regenerated from the run's own metrics file.

    python scripts/eval_table.py [metrics/eval.json]
"""
import json
import sys
from pathlib import Path


def cell(stat: dict | None) -> str:
    """'mean +- spread' of one {mean, spread, n} entry (spread: the std over seeds); '-' for none
    (a condition, or the rare set, with no frame in the split)."""
    if not stat:
        return "-"
    if stat.get("spread") is None:
        return f"{stat['mean']:.1f}"
    return f"{stat['mean']:.1f} ± {stat['spread']:.1f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(path: Path) -> None:
    ev = json.loads(path.read_text())
    variants = ev["variants"]
    conditions = sorted({c for v in variants.values() for c in v["conditions"]})
    counts = ev.get("test_frames_per_condition", {})
    print(f"Split `{ev['split']}` ({ev['test_frames']} frames), seeds {ev['seeds']}, "
          f"rare = {', '.join(ev['rare_conditions'])}. mIoU, mean ± std over seeds:\n")
    print(table(["variant", "overall", "rare", *conditions],
                [[name, cell(v["overall"]), cell(v.get("rare")), *(cell(v["conditions"].get(c)) for c in conditions)]
                 for name, v in variants.items()]))
    if counts:
        print(f"\nTest frames per condition: {counts}")
    print("\nAgainst `real` (a gain or loss only when it exceeds the larger seed spread):\n")
    keys = ["overall", "rare", *conditions]
    print(table(["variant", *keys],
                [[name, *(f"{g[k]['gain']:+.1f} ({g[k]['verdict'].split(':')[0]})" if k in g else "-" for k in keys)]
                 for name, g in ev["gains"].items()]))
    classes = list(next(iter(variants.values()))["per_class_iou"])
    print("\nPer-class IoU (mean over seeds):\n")
    print(table(["variant", *classes], [[name, *(f"{v['per_class_iou'][c]:.1f}" for c in classes)]
                                        for name, v in variants.items()]))
    fid = ev["fid"]
    print(f"\nFID / KID of the synthetic frames against real frames of the same condition "
          f"({fid.get('name', fid['features'])}):\n")
    print(table(["condition", "FID", "KID", "real frames", "synthetic frames"],
                [[c, f"{x['fid']:.1f}", f"{x['kid']:.3f}", str(x["real"]), str(x["synthetic"])]
                 for c, x in fid["conditions"].items()]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "metrics/eval.json"))
