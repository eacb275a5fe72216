"""What the tests share, written once: the repo root, scratch copies of the repo (a stage-run
workdir, git + DVC repos, the tiny two-stage pipeline of the sweep tests), the tiny datasets
(street-like camvid11 frames; CamVid-style input folders), the generator's test-sized params,
the MLflow server the scale-out tests talk to, and the planted pickle of the safe-loading tests.

The fixtures in tests/conftest.py hand these out; test modules import the plain functions and
constants from here (``from tests.helpers import ...``).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TINY_PARAMS = REPO / "tests" / "tiny_params.yaml"


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def one_line(excinfo, *names) -> str:
    """The message of a pytest.raises ``excinfo``, checked to be one line naming ``names``."""
    text = str(excinfo.value)
    assert "\n" not in text, text
    for name in names:
        assert str(name) in text, f"{name} not named in: {text}"
    return text


def assert_factory_names_params(factory, section: str, backend: str, folder_key: str,
                                unknown_backend: str, tmp_path: Path) -> None:
    """A backend factory (make_captioner, make_classifier) refuses a missing model folder naming
    ``<section>.<backend>.<folder_key>`` and an unknown backend naming ``<section>.backend``."""
    import pytest

    from synthdrive.errors import UserError
    from synthdrive.params import Params

    params = yaml.safe_load((REPO / "params.yaml").read_text())[section]
    params["backend"] = backend
    params[backend][folder_key] = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match=rf"{section}\.{backend}\.{folder_key}"):
        factory(Params(params, section), dataset=None)
    params["backend"] = unknown_backend
    with pytest.raises(UserError, match=rf"{section}\.backend"):
        factory(Params(params, section), dataset=None)


# --- scratch copies of the repo --------------------------------------------------------------------

# What a scratch copy of the whole repo leaves out: environments, caches, outputs, local stores.
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "data", "models", "mlflow.db", "mlartifacts",
                                     "cache", "tmp", "__pycache__", "*.egg-info", ".pytest_cache")
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"}


class ScratchRepo:
    """A scratch copy of (parts of) the repo, optionally a git + DVC repo, and the one way to run
    commands in it.

    ``copy``: ``"all"`` (the whole repo but COPY_IGNORE) or paths relative to the repo root;
    ``files``: {relative path: text} written on top; ``params``: overrides deep-merged into
    params.yaml (the copy's, else the repo's), after tests/tiny_params.yaml when ``tiny``.
    Commands run outside any DVC run (no ``DVC_*`` variables, no parent run key), with the
    venv's executables first on PATH, a git identity, and MLflow at ``mlflow_uri`` (default: the
    scratch repo's own mlflow.db, tracking.tracking_uri's default); ``env`` adds variables.
    Call :meth:`init` to make it a git and/or DVC repo.
    """

    def __init__(self, root: Path, *, copy: str | tuple | list = (), files: dict | None = None,
                 params: dict | None = None, tiny: bool = False, mlflow_uri: str | None = None,
                 env: dict | None = None):
        self.path = Path(root)
        self.path.mkdir(parents=True, exist_ok=True)
        self.mlflow_uri = mlflow_uri
        self.extra_env = dict(env or {})
        for part in ([""] if copy == "all" else copy):
            src, dst = REPO / part, self.path / part
            if src.is_dir():
                shutil.copytree(src, dst, ignore=COPY_IGNORE, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
        for name, text in (files or {}).items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(text)
        if tiny:
            self.set_params(yaml.safe_load(TINY_PARAMS.read_text()))
        if params is not None:
            self.set_params(params)

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DVC_", "MLFLOW_TRACKING", "SYNTHDRIVE_RUN_KEY"))}
        env.update(PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}", DVC_NO_ANALYTICS="1",
                   MLFLOW_DISABLE_TELEMETRY="true", **GIT_IDENTITY)
        if self.mlflow_uri:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_uri
        env.update(self.extra_env)
        return env

    def set_params(self, overrides: dict) -> None:
        file = self.path / "params.yaml"
        params = yaml.safe_load((file if file.is_file() else REPO / "params.yaml").read_text())
        file.write_text(yaml.safe_dump(deep_update(params, overrides), sort_keys=False))

    def sh(self, *cmd, check: bool = True, cwd: Path | None = None, env: dict | None = None,
           timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run ``cmd`` (in the repo unless ``cwd``); with ``check``, assert it exits 0."""
        cmd = [str(c) for c in cmd]
        proc = subprocess.run(cmd, cwd=cwd or self.path, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, \
                f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def dvc(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return self.sh(VENV_BIN / "dvc", *args, **kwargs)

    def init(self, *, git: bool = True, dvc: bool = True, commit: str | None = None) -> ScratchRepo:
        """``git init`` and/or ``dvc init`` (``--no-scm`` without git), then commit everything."""
        if git:
            self.sh("git", "init", "-q")
        if dvc:
            self.dvc("init", "-q", *([] if git else ["--no-scm"]))
        if commit:
            self.commit(commit)
        return self

    def commit(self, message: str) -> None:
        self.sh("git", "add", "-A")
        self.sh("git", "commit", "-qm", message)


class Workdir(ScratchRepo):
    """A scratch copy of the pipeline (params.yaml, dvc.yaml, stages/) to run stage scripts in,
    with MLflow in the test's own store.

    ``workdir.run("collect", {"collect": {...}})`` patches params.yaml and runs the stage script
    in a subprocess; it returns the CompletedProcess (stdout/stderr captured). With
    ``in_process=True`` it calls the script's ``main()`` in this process instead (cheaper where
    a fresh interpreter would re-import torch, transformers and mlflow for every run), in the
    workdir, outside any DVC run; errors propagate. ``load_stage`` gives the script as a module
    to patch first; ``run`` takes that module in place of the name (and runs it in-process).
    """

    def __init__(self, root: Path, monkeypatch, mlflow_uri: str):
        super().__init__(root, copy=("params.yaml", "dvc.yaml", "stages"), mlflow_uri=mlflow_uri)
        self._monkeypatch = monkeypatch

    def load_stage(self, stage: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(f"stage_{stage}", self.path / "stages" / f"{stage}.py")
        module = importlib.util.module_from_spec(spec)
        self._monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        return module

    def run(self, stage: str | types.ModuleType, overrides: dict | None = None, *, check: bool = True,
            in_process: bool = False, args: tuple = (), env: dict | None = None, timeout: float = 600):
        if overrides:
            self.set_params(overrides)
        if in_process or isinstance(stage, types.ModuleType):
            patch = self._monkeypatch
            patch.chdir(self.path)
            for var in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
                patch.delenv(var, raising=False)
            module = self.load_stage(stage) if isinstance(stage, str) else stage
            patch.setattr(sys, "argv", [module.__file__, *args])
            return module.main()
        proc = self.sh(sys.executable, f"stages/{stage}.py", *args, check=False, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
        return proc

    def stub_stage_run(self, run=None):
        """tracking.stage_run yields ``run`` (default: one that logs nothing) instead of an MLflow
        run, for stages run in this process."""
        from synthdrive import tracking

        run = run or types.SimpleNamespace(log_metrics=lambda *a, **k: None, log_artifact=lambda *a, **k: None,
                                           log_parent_metrics=lambda *a, **k: None)
        self._monkeypatch.setattr(tracking, "stage_run", lambda *a, **k: contextlib.nullcontext(run))
        return run


# The two-stage pipeline of the sweep and scale-out tests: collect over a 3-frame folder, then a
# test-only stage that logs its headline numbers on the parent run.
HEADLINE_STAGE = textwrap.dedent('''
    """Test-only stage: the headline numbers of the tiny pipeline, logged on the parent run."""
    import os

    from synthdrive import tracking
    from synthdrive.dataset import Dataset, write_json
    from synthdrive.errors import run_stage


    def main():
        data = Dataset("data/raw")
        headline = {"width": data.image(data.records[0]["id"]).shape[1], "frames": len(data),
                    "jobs": int(os.environ.get("SYNTHDRIVE_JOBS", "0"))}  # -j reached the stage
        with tracking.stage_run("headline", {}) as run:
            run.log_parent_metrics(headline)
        write_json("metrics/headline.json", headline)


    if __name__ == "__main__":
        run_stage(main)
''')
TINY_PIPELINE = {"stages": {
    "collect": {"cmd": "python stages/collect.py",
                "deps": ["stages/collect.py", "synthdrive", "camvid_tiny"],
                "params": ["labels", "collect"], "outs": ["data/raw"]},
    "headline": {"cmd": "python stages/headline.py",
                 "deps": ["stages/headline.py", "data/raw"],
                 "metrics": [{"metrics/headline.json": {"cache": False}}]},
}}


def tiny_headline_repo(root: Path) -> ScratchRepo:
    """A copy of the repo's code with TINY_PIPELINE over a 3-frame folder and a sweep `tiny` of
    two widths (not yet a git or DVC repo: call ``init``)."""
    repo = ScratchRepo(root, copy=("synthdrive", "stages/collect.py"), files={
        "stages/headline.py": HEADLINE_STAGE,
        "dvc.yaml": yaml.safe_dump(TINY_PIPELINE, sort_keys=False),
        "experiments/sweeps.yaml": yaml.safe_dump({"sweeps": {"tiny": {
            "description": "two widths", "grid": {"collect.width": [32, 48]}, "metrics": ["width", "frames"]}}}),
        ".gitignore": "mlflow.db\nmlartifacts/\n__pycache__/\n"},
        params={"collect": {"source": "folder", "height": 16, "width": 24,
                            "folder": {"path": "camvid_tiny", "layout": "split_dirs"}}})
    make_folder_dataset(repo.path / "camvid_tiny", n=3, size=(24, 32))
    return repo


def checkout_copy(tmp_path: Path, monkeypatch) -> Path:
    """An unedited copy of the repo's synthdrive/ (at tmp_path/checkout) that synthdrive.codehash
    hashes from now on: edits there are code changes to the resume checks."""
    from synthdrive import codehash

    copy = tmp_path / "checkout"
    shutil.copytree(codehash.ROOT / "synthdrive", copy / "synthdrive", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "ROOT", copy)
    return copy


# --- tiny datasets ---------------------------------------------------------------------------------

def make_folder_dataset(root: Path, n: int = 3, size=(24, 32), num_classes: int = 11, seed: int = 0):
    """A tiny images/ + labels/ folder in CamVid's split layout (train split): collect's input."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{'0001TP' if i == 0 else '0016E5'}_{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), np.uint8)).save(root / "train" / "images" / name)
        Image.fromarray(rng.integers(0, num_classes, size, np.uint8)).save(root / "train" / "labels" / name)
    return root


STREET_COLOURS = {0: (120, 160, 220), 1: (150, 70, 60), 3: (90, 90, 95), 4: (170, 160, 150), 8: (200, 30, 30)}
STREET_GAIN = {"day": 1.0, "dusk": 0.55, "night": 0.25}
SEG_SIZE = (64, 128)    # the segmenter and FID tests' frames
GEN_SIZE = (32, 64)     # the generator and synthesis tests' frames
# The generator tests' condition mix: mostly clear day, a few rare conditions.
GENERATOR_MIX = ("clear-day",) * 16 + ("clear-dusk",) * 4 + ("rain-day",) * 2 + ("clear-night",) * 2
# The segmenter tests' real and synthetic datasets.
REAL_CONDITIONS = ("clear-day", "clear-day", "clear-dusk", "rain-night")
SYNTH_CONDITIONS = ("clear-dusk", "rain-night")


def street_frame(rng: np.random.Generator, time_of_day: str, size=SEG_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A street-like camvid11 frame: building, sky, road, pavement and car boxes, dimmed by time of day."""
    h, w = size
    label = np.zeros((h, w), np.uint8)
    horizon = h // 2 + int(rng.integers(-6, 7))
    label[:horizon, : w // 3] = 1
    label[horizon:] = 3
    label[horizon + (h - horizon) // 2:, : w // 4] = 4
    for _ in range(int(rng.integers(1, 3))):
        x = int(rng.integers(0, w - w // 6))
        label[horizon - 5: horizon + 6, x: x + w // 6] = 8
    image = np.zeros((h, w, 3), np.float32)
    for cls, col in STREET_COLOURS.items():
        image[label == cls] = col
    image = image * STREET_GAIN[time_of_day] + rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def street_frames(n: int, seed: int, size=SEG_SIZE) -> list[np.ndarray]:
    """``n`` day-time street images."""
    rng = np.random.default_rng(seed)
    return [street_frame(rng, "day", size)[0] for _ in range(n)]


def make_dataset(root: Path, counts: dict | None = None, conditions=GENERATOR_MIX, *, size=GEN_SIZE,
                 seed: int = 0, prefix: str = "f", ignore_corner: bool = True,
                 conditions_file: bool = False):
    """A tiny camvid11 dataset of street frames, as collect would write it.

    ``counts``: frames per split (default 24 train, 6 val); ``conditions`` cycle over the frames
    in order; ids are ``{prefix}_{split}_{i:03d}``. ``ignore_corner``: each label's top-left
    pixel is the ignore id 255. ``conditions_file``: also write the classify stage's
    conditions.jsonl (the frames' truth) beside the dataset folder.
    """
    from synthdrive.dataset import Dataset, DatasetWriter

    counts = {"train": 24, "val": 6} if counts is None else counts
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, "camvid11", source="test", height=size[0], width=size[1]) as writer:
        k = 0
        for split, n in counts.items():
            for i in range(n):
                weather, tod = conditions[k % len(conditions)].split("-")
                image, label = street_frame(rng, tod, size)
                if ignore_corner:
                    label[0, 0] = 255
                writer.add({"id": f"{prefix}_{split}_{i:03d}", "split": split, "weather": weather,
                            "time_of_day": tod, "source": "test", "target_condition": f"{weather}-{tod}"},
                           image, label)
                k += 1
    dataset = Dataset(root)
    if conditions_file:
        write_conditions(dataset, Path(root).parent / "conditions.jsonl")
    return dataset


def write_conditions(dataset, path: Path) -> None:
    """The classify stage's output for ``dataset``: each frame's condition is its truth."""
    path.write_text("".join(json.dumps({"id": r["id"], "weather": r["weather"], "time_of_day": r["time_of_day"]})
                            + "\n" for r in dataset.records))


def truth(dataset) -> dict:
    from synthdrive.conditions import Condition

    return {r["id"]: Condition(r["weather"], r["time_of_day"]) for r in dataset.records}


def layouts(dataset, n: int = 2) -> np.ndarray:
    """The label maps of the first ``n`` val frames."""
    return np.stack([dataset.label(r["id"]) for r in dataset.split("val")[:n]])


def gen_params(**overrides) -> dict:
    """The repo's generator section shrunk to test size."""
    cfg = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["generator"])
    cfg.update(height=GEN_SIZE[0], width=GEN_SIZE[1], sample_every=2, checkpoint_every=2, eval_frames=4)
    cfg["spade_gan"].update(iterations=4, batch_size=4, channels=[32, 16, 16, 8], spade_hidden=8,
                            z_dim=8, cond_dim=4, d_channels=8, d_layers=2, d_scales=2, lr_g=0.002)
    cfg["sdm"].update(iterations=2, batch_size=2, channels=[8, 16], layers_per_block=1, spade_hidden=8,
                      groups=4, train_timesteps=50, device="cpu")
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def fake_segmenter_runs(workdir) -> None:
    """data/raw + conditions and a folder per segmenter run whose files exist but are not models:
    evaluating any of them would fail, so an error about anything else came first."""
    from synthdrive.segment.train import VARIANTS

    make_dataset(workdir.path / "data" / "raw", {"train": 4, "test": 4}, REAL_CONDITIONS, size=SEG_SIZE,
                 ignore_corner=False, conditions_file=True)
    for variant in VARIANTS:  # every folder evaluate reads (real_aug_synth too)
        run = workdir.path / "models" / "segmenter" / f"{variant}-0"
        run.mkdir(parents=True)
        (run / "model.pth").write_bytes(b"not a checkpoint")
        (run / "config.json").write_text("{}")


# --- a pickle that runs code -----------------------------------------------------------------------

class RunsCode:
    """Unpickling this runs ``touch marker`` in a shell, as the issue's crafted file did."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def plant_pickle(path: Path, marker: Path) -> Path:
    """A torch.save file of tensors plus one object that runs code when unpickled."""
    import torch

    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": RunsCode(marker)}, path)
    return path


# --- an MLflow tracking server ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store: str, env: dict, start_timeout: float = 180.0):
    """`mlflow server` on a free localhost port; yields its base URL and stops it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(VENV_BIN / "mlflow"), "server",
                               "--backend-store-uri", store, "--host", "127.0.0.1", "--port",
                               str(port), "--workers", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own group: stop its workers too
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not answer /health"
                time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def rest(url: str, endpoint: str, body: dict, get: bool = False) -> dict:
    if get:
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}?"
                                         + urllib.parse.urlencode(body))
    else:
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
