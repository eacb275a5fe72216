"""No file a param points at runs code, and a weights folder without weights is one line naming
the param and the folder, raised before anything expensive and leaving no output behind.

The planted files are what the issue describes: a pickle whose ``__reduce__`` runs a shell
command (it writes a marker file; :func:`test_the_planted_pickle_really_runs_code` shows it does
when unpickled the unsafe way), and model folders with a config but no weights. The segmenter's
own folders (config as data, weights_only checkpoints) are tested at the end of
tests/segment/test_segment.py. The planted pickle is tests.helpers.RunsCode / plant_pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdrive.errors import UserError
from synthdrive.params import ParamError
from tests.condition_helpers import build_tiny_clip, build_tiny_llava, write_rendered_dataset
from tests.helpers import fake_segmenter_runs, gen_params, one_line, plant_pickle


def test_the_planted_pickle_really_runs_code(tmp_path):
    marker = tmp_path / "ran"
    torch.load(plant_pickle(tmp_path / "evil.pth", marker), weights_only=False)
    assert marker.exists()  # so "marker absent" below means: refused, not a dud payload


# --- the shared folder check -----------------------------------------------------------------------

def test_model_folder_needs_its_weight_files(tmp_path):
    from synthdrive.weights import check_model_folder

    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(UserError) as e:
        check_model_folder(str(folder), "x.model_dir")
    assert "no config.json" in one_line(e, "x.model_dir", folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(UserError) as e:
        check_model_folder(str(folder), "x.model_dir")
    assert "no weights" in one_line(e, "x.model_dir", folder)
    # a sharded checkpoint must have every shard its index names
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(UserError) as e:
        check_model_folder(str(folder), "x.model_dir")
    assert "model-00002-of-00002.safetensors" in one_line(e, "x.model_dir", folder)
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert check_model_folder(str(folder), "x.model_dir") == folder
    with pytest.raises(UserError, match="x.model_dir"):
        check_model_folder("", "x.model_dir")


def _pipeline_without_unet_weights(folder: Path) -> Path:
    """model_index.json + components as save_pretrained writes them, the unet's weights missing."""
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None]}))
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    return folder


def test_pipeline_folder_needs_weights_in_each_model_component(tmp_path):
    from synthdrive.weights import check_pipeline_folder

    folder = _pipeline_without_unet_weights(tmp_path / "sd")
    with pytest.raises(UserError) as e:
        check_pipeline_folder(str(folder), "x.pipeline")
    one_line(e, "x.pipeline", folder / "unet")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert check_pipeline_folder(str(folder), "x.pipeline") == folder


def test_sign_pipeline_folder_without_weights_names_the_param(tmp_path):
    from synthdrive.signs.diffusion import _resolve

    folder = _pipeline_without_unet_weights(tmp_path / "sd")
    with pytest.raises(ParamError) as e:
        _resolve(str(folder))
    one_line(e, "signs.data.diffusers.model_dir", folder / "unet")


def test_pipeline_component_that_is_custom_code_is_refused(tmp_path):
    from synthdrive.signs.diffusion import _resolve

    folder = _pipeline_without_unet_weights(tmp_path / "sd")
    marker = tmp_path / "ran"
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["my_unet", "MyUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "my_unet.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass MyUNet: pass\n")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ParamError) as e:
        _resolve(str(folder))
    assert "custom code" in one_line(e, "signs.data.diffusers.model_dir", folder / "unet")
    assert not marker.exists()


# --- CLIP, LLaVA, ControlNet: folders with a config but no weights ------------------------------------

def _drop_weights(folder: Path) -> Path:
    for f in list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")) + list(folder.glob("*.index.json")):
        f.unlink()
    assert (folder / "config.json").is_file()
    return folder


def test_clip_folder_without_weights_stops_the_classify_stage_first(workdir, tmp_path):
    clip = _drop_weights(build_tiny_clip(tmp_path / "clip"))
    write_rendered_dataset(workdir.path / "data" / "raw", {"train": 2, "test": 2})
    with pytest.raises(UserError) as e:
        workdir.run("classify", {"classify": {"backend": "clip", "clip": {"model_dir": str(clip)}}},
                    in_process=True)
    assert "no weights" in one_line(e, "classify.clip.model_dir", clip)
    assert not (workdir.path / "data" / "conditions.jsonl").exists()
    assert not (workdir.path / "models" / "classify").exists()


def test_llava_folder_without_weights_names_the_param_and_folder(tmp_path):
    from synthdrive.caption.llava import LlavaCaptioner

    llava = _drop_weights(build_tiny_llava(tmp_path / "llava"))
    with pytest.raises(UserError) as e:
        LlavaCaptioner(str(llava), "{classes}")
    assert "no weights" in one_line(e, "caption.llava.model_dir", llava)


def test_controlnet_folders_without_weights_stop_train_generator_before_it_writes(workdir, tiny_dataset, tmp_path):
    base = _pipeline_without_unet_weights(tmp_path / "sd")
    controlnet = tmp_path / "controlnet"
    controlnet.mkdir()
    (controlnet / "config.json").write_text("{}")  # the marker file, no weights
    tiny_dataset(workdir.path / "data" / "raw", {"train": 12, "val": 4}, conditions_file=True)
    cfg = gen_params(backend="controlnet", eval_frames=0,
                     controlnet={"base_model_dir": str(base), "controlnet_dir": str(controlnet), "device": "cpu"})
    workdir.set_params({"generator": cfg, "classify": {"use": "auto"}})
    proc = workdir.run("train_generator", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for name in ("generator.controlnet.base_model_dir", str(base / "unet"),
                 "generator.controlnet.controlnet_dir", str(controlnet)):
        assert name in error[0]
    assert not (workdir.path / "models" / "generator" / "generator.json").exists()
    assert not (workdir.path / "models" / "generator").exists()


# --- Inception weights (evaluate.fid.inception_weights) ---------------------------------------------

def test_inception_weights_that_run_code_are_refused(tmp_path):
    from synthdrive.segment import evaluate as ev

    marker = tmp_path / "ran"
    path = plant_pickle(tmp_path / "pt_inception.pth", marker)
    with pytest.raises(UserError) as e:
        ev.inception_features(path)
    one_line(e, "evaluate.fid.inception_weights", path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [[torch.zeros(2)], {"net": "not a tensor"}, {}], ids=["list", "str", "empty"])
def test_inception_weights_must_be_a_state_dict_of_tensors(tmp_path, content):
    from synthdrive.segment import evaluate as ev

    path = tmp_path / "pt_inception.pth"
    torch.save(content, path)
    with pytest.raises(UserError) as e:
        ev.inception_features(path)
    one_line(e, "evaluate.fid.inception_weights", path)


def test_inception_weights_from_safetensors(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    from safetensors.torch import save_file

    from synthdrive.segment import evaluate as ev

    with monkeypatch.context() as patch:  # the net at random init, without its download
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    features = ev.inception_features(path)
    key = "Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(features.state_dict()[key], net.state_dict()[key])
    # the right format but another network's tensors: one line, not load_state_dict's traceback
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError) as e:
        ev.inception_features(tmp_path / "other.safetensors")
    one_line(e, "evaluate.fid.inception_weights", tmp_path / "other.safetensors")


def test_evaluate_checks_the_inception_weights_before_any_segmenter(workdir, tmp_path):
    fake_segmenter_runs(workdir)
    missing = tmp_path / "missing.pth"
    params = {"segmenter": {"seeds": [0]}, "classify": {"use": "truth"},
              "evaluate": {"threads": 1, "fid": {"inception_weights": str(missing)}}}
    proc = workdir.run("evaluate", params, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "evaluate.fid.inception_weights" in proc.stderr and str(missing) in proc.stderr
    marker = tmp_path / "ran"
    planted = plant_pickle(tmp_path / "pt_inception.pth", marker)
    proc = workdir.run("evaluate", {"evaluate": {"fid": {"inception_weights": str(planted)}}}, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "evaluate.fid.inception_weights" in proc.stderr and str(planted) in proc.stderr
    assert not marker.exists()
    assert not (workdir.path / "metrics" / "eval.json").exists()


def test_evaluate_checks_every_segmenter_folder_first(workdir):
    fake_segmenter_runs(workdir)
    (workdir.path / "models" / "segmenter" / "real_synth-0" / "model.pth").unlink()
    proc = workdir.run("evaluate", {"segmenter": {"seeds": [0]}, "classify": {"use": "truth"},
                                    "evaluate": {"threads": 1}}, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "real_synth-0/model.pth: missing" in proc.stderr


def test_loaded_tensor_files_are_plain_tensors(tmp_path):
    from synthdrive.weights import load_tensors

    path = tmp_path / "w.pth"
    torch.save({"a": torch.arange(3)}, path)
    assert torch.equal(load_tensors(path, "x.weights")["a"], torch.arange(3))
    np.save(tmp_path / "arr.npy", np.zeros(2))  # neither a torch file nor safetensors
    with pytest.raises(UserError) as e:
        load_tensors(tmp_path / "arr.npy", "x.weights")
    one_line(e, "x.weights", tmp_path / "arr.npy")


def test_relative_model_paths_resolve_against_the_repo_root(tmp_path, monkeypatch):
    """Queued experiments run in a temp copy (the cwd) while DVC_ROOT names the repo holding the
    weights: a relative model_dir or weights file must be looked up there, for every backend."""
    from synthdrive.segment.evaluate import inception_features
    from synthdrive.weights import check_model_folder

    repo, copy = tmp_path / "repo", tmp_path / "copy"
    (repo / "models" / "clip").mkdir(parents=True)
    (repo / "models" / "clip" / "config.json").write_text("{}")
    (repo / "models" / "clip" / "model.safetensors").write_bytes(b"")
    copy.mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert check_model_folder("models/clip", "classify.clip.model_dir") == repo / "models" / "clip"
    torch.save({"x": torch.zeros(1)}, repo / "inception.pth")
    with pytest.raises(UserError, match="not torch-fidelity's Inception-v3 weights"):
        inception_features("inception.pth")  # found (and read) in the repo, not "does not exist"
