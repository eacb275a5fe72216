"""Every backend's ``device`` param goes through one rule (synthdrive.compute)."""
import pytest
import torch

from synthdrive.compute import resolve_device
from synthdrive.errors import UserError


def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_naming_the_param():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto", "classify.clip.device") == torch.device("cpu")
    assert resolve_device("cpu", "classify.clip.device") == torch.device("cpu")
    with pytest.raises(UserError, match=r"caption.llava.device='cuda:1' but CUDA is not available"):
        resolve_device("cuda:1", "caption.llava.device")


def test_bare_cuda_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cuda", "generator.sdm.device") == torch.device("cuda", 3)
    assert resolve_device("cuda:1", "generator.sdm.device") == torch.device("cuda", 1)


def test_auto_threads_share_the_cores_among_the_running_processes(monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0))
    from synthdrive.compute import JOBS_ENV, set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(JOBS_ENV, raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        assert set_threads("auto") == cores == torch.get_num_threads()
        monkeypatch.setenv(JOBS_ENV, str(cores))
        assert set_threads("auto") == 1
        monkeypatch.setenv(JOBS_ENV, str(4 * cores))  # more jobs than cores: still one thread
        assert set_threads("auto") == 1
        assert set_threads(3) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
