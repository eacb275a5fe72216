"""Where a stage computes: the one rule for every ``device`` param (``auto | cpu | cuda |
cuda:N``), every ``threads`` param (``auto | N``) and the torchrun relaunch of ``nproc > 1``."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from synthdrive.errors import UserError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str, param: str) -> "torch.device":
    """``auto``: CUDA when there is a GPU, else the CPU. A bare ``cuda`` under torchrun is this
    process's GPU (LOCAL_RANK). Asking for CUDA without one is a UserError naming ``param``."""
    import torch  # here, not at the top: the sweep runner imports this module for JOBS_ENV

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"params.yaml: {param}={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return rank_device(torch.device(name))


def rank_device(device: "torch.device") -> "torch.device":
    """A CUDA device without an index means this process's GPU under torchrun (LOCAL_RANK)."""
    import torch

    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


JOBS_ENV = "SYNTHDRIVE_JOBS"  # experiments running at once; the sweep runner sets it for the queue


def set_threads(setting: int | str) -> int:
    """Set and return this process's torch threads: a number, or ``auto`` = the cores this
    process may use shared among the processes running at once (SYNTHDRIVE_JOBS parallel
    experiments x this launch's torchrun processes). Oversubscribing hurts far more than it
    helps: a 2-thread generator on 2 cores went from 1.6 to 11.7 s/step beside one more job."""
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        processes = int(os.environ.get(JOBS_ENV, "1")) * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, cores // max(1, processes))
    else:
        threads = int(setting)
    import torch

    torch.set_num_threads(threads)
    return threads


def relaunch(nproc: int, script: str) -> None:
    """With ``nproc > 1``, run ``script`` (this stage, same arguments) as ``nproc`` torchrun
    processes and exit with their status; inside the launch (or with one process) return."""
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               script, *sys.argv[1:]]
        sys.exit(subprocess.run(cmd).returncode)


def is_helper_rank() -> bool:
    """A torchrun rank other than 0: it trains in step with rank 0 and writes nothing."""
    return int(os.environ.get("RANK", "0")) != 0
