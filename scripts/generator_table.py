"""The generator comparison table (issue 9) from DVC experiments, one row per experiment.

    python scripts/generator_table.py EXP [EXP ...] [--baseline EVAL_JSON]

Reads each experiment's committed metrics (``git show <exp ref>:metrics/...``: what
``dvc exp show`` shows) and finds its MLflow parent run (named after the experiment) in the
tracking store, so every row can be traced to both. Gains are real_synth minus real on the same
seeds; ``--baseline`` names an eval.json whose seed spread says how large a gain must be to
count (one seed per row cannot say it alone).
"""
from __future__ import annotations

import argparse
import json
import subprocess

from synthdrive import tracking


def exp_ref(name: str) -> str:
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                          capture_output=True, text=True, check=True).stdout.split()
    matches = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if not matches:
        raise SystemExit(f"no DVC experiment named {name!r} here (see `dvc exp list`)")
    return matches[-1]


def metrics(ref: str, name: str) -> dict:
    shown = subprocess.run(["git", "show", f"{ref}:metrics/{name}"], capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else {}


def parent_run(name: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.runName = '{name}'")
    return runs[0].info.run_id[:8] if runs else "-"


def row(name: str) -> list[str]:
    ref = exp_ref(name)
    gen, synth = metrics(ref, "train_generator.json"), metrics(ref, "synthesize.json")
    filt, ev = metrics(ref, "filter_synthetic.json"), metrics(ref, "eval.json")
    variants, fid = ev.get("variants", {}), ev.get("fid", {}).get("conditions", {})

    def miou(variant: str, part: str) -> float | None:
        return variants.get(variant, {}).get(part, {}).get("mean")

    def gain(part: str) -> str:
        synth_, real = miou("real_synth", part), miou("real", part)
        return f"{synth_ - real:+.1f}" if synth_ is not None and real is not None else "-"

    def num(value, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    per_condition = {c: v["fid"] for c, v in fid.items() if c != "all_targets"}
    worst = max(per_condition, key=per_condition.get) if per_condition else None
    return [name, synth.get("backend", "-"),
            f"{gen.get('trained_steps', '-')}", num(gen.get("train_seconds"), ".0f"),
            num(synth.get("images_per_s"), ".1f"),
            f"{num(gen.get('l1_generator'), '.1f')} / {num(gen.get('l1_floor'), '.1f')}",
            num(gen.get("diversity_l1"), ".1f"),
            num(fid.get("all_targets", {}).get("fid"), ".1f"),
            f"{worst} {per_condition[worst]:.1f}" if worst else "-",
            f"{num(filt.get('mean_score'), '.1f')} ({num(filt.get('kept_fraction'), '.0%')} kept)",
            num(miou("real_synth", "overall"), ".1f"), gain("overall"),
            num(miou("real_synth", "rare"), ".1f"), gain("rare"), parent_run(name)]


HEADER = ["experiment", "generator", "steps", "train s", "images/s", "L1 / floor", "diversity",
          "FID all", "worst FID", "consistency mIoU", "mIoU", "gain", "rare mIoU", "rare gain",
          "MLflow parent"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--baseline", help="an eval.json with several seeds: its spread is printed")
    args = parser.parse_args()
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(name)) + " |" for name in args.experiments]
    print("\n".join(lines))
    if args.baseline:
        with open(args.baseline) as f:
            variants = json.load(f)["variants"]
        spreads = ", ".join(f"{v} {part} {variants[v][part]['spread']:.1f}"
                            for v in variants for part in ("overall", "rare"))
        print(f"\nSeed spread (std over seeds) in {args.baseline}: {spreads}")


if __name__ == "__main__":
    main()
