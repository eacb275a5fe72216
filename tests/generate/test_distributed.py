"""Generator training on several processes (generator.nproc, torchrun + DDP, gloo on CPU): the
shared helper (synthdrive.generate.training.Distributed) on two spawned processes, and the
train_generator stage relaunching itself under torchrun."""
from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from synthdrive.generate.data import TrainData
from synthdrive.generate.training import Distributed, distributed, fingerprint, step_rng

SEED, STEPS, BATCH = 3, 3, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s batch at ``step``, drawn from its stream as the backends draw theirs."""
    rng = Distributed(rank, 2).rng(SEED, step)
    x = torch.from_numpy(rng.normal(size=(BATCH, 3))).float()
    return x, x.sum(1, keepdim=True) * float(rank + 1)  # the ranks' targets differ, so their gradients do


def _net() -> torch.nn.Module:
    torch.manual_seed(1000 + int(os.environ["RANK"]))  # different initial weights: DDP must broadcast rank 0's
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    with distributed() as dist:
        net = _net()
        wrapped = dist.wrap(net)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        report = {"rank": dist.rank, "world_size": dist.world_size, "backend": torch.distributed.get_backend(),
                  "wrapped": type(wrapped).__name__, "grad_error": [], "losses": []}
        for step in range(STEPS):
            # The gradient each rank would get alone on either shard, from the same weights.
            local = []
            for r in range(2):
                net.zero_grad()
                x, y = _shard(r, step)
                torch.nn.functional.mse_loss(net(x), y).backward()
                local.append([p.grad.clone() for p in net.parameters()])
            x, y = _shard(dist.rank, step)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(wrapped(x), y)
            loss.backward()  # DDP: all-reduced, averaged
            report["grad_error"].append(max((p.grad - (a + b) / 2).abs().max().item()
                                            for p, a, b in zip(net.parameters(), *local)))
            report["losses"].append(dist.mean({"loss": loss.item()})["loss"])
            opt.step()
        report["max_difference"] = dist.max_difference([net])
        report["weights"] = [p.detach().flatten().tolist() for p in net.parameters()]
    report["group_closed"] = not torch.distributed.is_initialized()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(report, f)


def test_one_process_keeps_the_single_process_streams_and_is_a_no_op():
    dist = Distributed()
    assert dist.is_main and dist.world_size == 1
    assert dist.rng(SEED, 5).integers(0, 2**62) == step_rng(SEED, 5).integers(0, 2**62)
    net = torch.nn.Linear(2, 2)
    assert dist.wrap(net) is net and dist.max_difference([net]) == 0.0
    assert dist.mean({"loss": 1.5}) == {"loss": 1.5}
    streams = [Distributed(r, 2).rng(SEED, 5).integers(0, 2**62, 4).tolist() for r in range(2)]
    assert streams[0] != streams[1]  # each rank its own shard of the step's batch


def test_nproc_is_in_the_checkpoint_fingerprint():
    data = TrainData(["f000"], torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), [], 11)
    cfg = {"seed": 0, "height": 2, "spade_gan": {"lr_g": 1.0, "iterations": 4}}
    one = fingerprint({**cfg, "nproc": 1}, "spade_gan", data)
    assert fingerprint({**cfg, "nproc": 1, "sample_every": 50}, "spade_gan", data) == one  # cadence only
    assert fingerprint({**cfg, "nproc": 2}, "spade_gan", data) != one  # another global batch: no resume


def test_two_gloo_processes_average_gradients_and_stay_identical(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, report in enumerate(reports):
        assert report["rank"] == rank and report["world_size"] == 2 and report["backend"] == "gloo"
        assert report["wrapped"] == "DistributedDataParallel" and report["group_closed"]
        assert max(report["grad_error"]) < 1e-6  # the gradient is the mean of both shards' gradients
        assert report["max_difference"] == 0.0
    assert reports[0]["weights"] == reports[1]["weights"]  # despite different initial weights per rank
    assert reports[0]["losses"] == reports[1]["losses"]    # both log the mean over the global batch


def _stage_workdir(workdir, tiny_dataset, **overrides) -> dict:
    from tests.helpers import gen_params

    tiny_dataset(workdir.path / "data" / "raw", {"train": 12, "val": 4}, conditions_file=True)
    cfg = gen_params(**overrides)
    workdir.set_params({"generator": cfg, "classify": {"use": "auto"}})
    return cfg


def test_stage_trains_spade_gan_on_two_processes_resuming_a_checkpoint(workdir, tiny_dataset):
    """train_generator with generator.nproc: 2 relaunches itself under torchrun (gloo on CPU):
    both ranks resume from the checkpoint of an interrupted run, train in step, rank 0 writes."""
    # Imported here, not at the top: mp.spawn's children import this module, and need none of it.
    from synthdrive import generate
    from synthdrive.dataset import Dataset
    from synthdrive.generate.data import load_split
    from synthdrive.params import Params
    from tests.helpers import GEN_SIZE, truth

    H, W = GEN_SIZE
    cfg = _stage_workdir(workdir, tiny_dataset, nproc=2, eval_frames=2, diversity_seeds=2, sample_every=4,
                         spade_gan={"iterations": 4})
    # The interrupted run: 2 of the 4 steps, checkpointed where the stage looks (same settings).
    raw_ds = Dataset(workdir.path / "data" / "raw")
    first = generate.create(Params({**cfg, "spade_gan": {**cfg["spade_gan"], "iterations": 2}}), "camvid11")
    first.train(load_split(raw_ds, "train", H, W, truth(raw_ds)), workdir.path / "models" / "generator.ckpt")

    proc = workdir.run("train_generator")
    assert "train_generator: spade_gan" in proc.stdout
    assert proc.stdout.count("resuming from models/generator.ckpt/spade_gan.pt at step 2") == 2  # each rank
    metrics = json.loads((workdir.path / "metrics" / "train_generator.json").read_text())
    assert metrics["world_size"] == 2 and metrics["trained_steps"] == 4 and metrics["l1_floor"] > 0
    # Identical weights on both ranks (DDP, same EMA); a rank that missed the checkpoint would differ,
    # since DDP broadcasts rank 0's weights only when it wraps the nets, before the resume.
    assert metrics["rank_max_difference"] == 0.0
    assert json.loads((workdir.path / "models" / "generator" / "generator.json").read_text())["trained_steps"] == 4
    assert torch.load(workdir.path / "models" / "generator.ckpt" / "spade_gan.pt", weights_only=True)["step"] == 4


def test_stage_refuses_nproc_for_controlnet(workdir, tiny_dataset):
    _stage_workdir(workdir, tiny_dataset, backend="controlnet", nproc=2)
    proc = workdir.run("train_generator", check=False)
    assert proc.returncode == 1 and "generator.nproc" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr  # refused before any relaunch
    assert not (workdir.path / "models" / "generator").exists()
