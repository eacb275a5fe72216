"""train_segmenter: one segmenter run (variant x seed) -> models/segmenter/<variant>-<seed>/.

Variants: real (real train frames), real_aug (plus real frames photometrically shifted to rare
conditions: the control), real_synth (plus the kept synthetic frames), real_aug_synth (plus both:
the same number of extra frames as real_aug or real_synth, half shifted real, half synthetic).
Mixed variants put their extra frames on top of a full real batch, so every variant sees the same
real samples.
With segmenter.train.nproc > 1 the stage relaunches itself under torchrun (gloo on CPU).
"""
import argparse
from pathlib import Path


from synthdrive import params, tracking
from synthdrive.compute import is_helper_rank, relaunch, set_threads
from synthdrive.errors import run_stage
from synthdrive.segment.train import VARIANTS, run_config, train

RAW, SYNTHETIC, KEPT = Path("data/raw"), Path("data/synthetic"), Path("data/synthetic_filter.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    p = params.load()
    seg = p["segmenter"]
    relaunch(seg["train.nproc"], __file__)
    set_threads(seg["train.threads"])
    name = f"{args.variant}-{args.seed}"
    out = Path("models/segmenter") / name
    cfg = run_config(seg, label_space=p["labels.space"], variant=args.variant, seed=args.seed, raw=RAW,
                     synthetic=SYNTHETIC, kept=KEPT, work_dir=Path("models/.segmenter_work") / name,
                     tracking_uri=tracking.tracking_uri())
    if is_helper_rank():
        train(cfg, out, resume=bool(seg["train.resume"]))
        return
    with tracking.stage_run(f"train_segmenter@{name}", {"variant": args.variant, "seed": args.seed}) as run:
        summary = train(cfg, out, resume=bool(seg["train.resume"]), log_fn=run.log_metrics,
                        log_interval=int(seg["train.log_interval"]))
        run.log_metrics({k: v for k, v in summary.items() if k != "final_losses"})
        print(f"train_segmenter@{name}: {summary['iters']} iterations, {summary['seconds_per_iter']} s/iter, "
              f"{summary['real_samples_seen']} real + {summary['extra_samples_seen']} extra samples -> {out}")


if __name__ == "__main__":
    run_stage(main)
