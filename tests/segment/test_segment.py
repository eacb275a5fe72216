"""Segmentation: generated mmseg configs, our dataset as an mmseg dataset, equal real exposure,
the real_aug control, training + weights_only checkpoints, mIoU via IoUMetric, the filter and
evaluate stages, and 2-process torchrun training on CPU (gloo)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdrive.dataset import Dataset
from synthdrive.errors import UserError
from synthdrive.params import Params
from tests.helpers import REAL_CONDITIONS, SEG_SIZE, SYNTH_CONDITIONS, checkout_copy, one_line, write_conditions

H, W = SEG_SIZE


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_dataset) -> dict:
    root = tmp_path_factory.mktemp("segdata")
    raw = tiny_dataset(root / "raw", {"train": 12, "val": 4, "test": 8}, REAL_CONDITIONS, size=SEG_SIZE,
                       ignore_corner=False).root
    synthetic = tiny_dataset(root / "synthetic", {"train": 6}, SYNTH_CONDITIONS, size=SEG_SIZE, seed=1, prefix="syn",
                             ignore_corner=False).root
    return {"root": root, "raw": raw, "synthetic": synthetic}


def tiny_segmenter(**train) -> Params:
    """params.yaml's segmenter section, shrunk for tests."""
    import yaml

    from tests.helpers import REPO, deep_update

    seg = yaml.safe_load((REPO / "params.yaml").read_text())["segmenter"]
    deep_update(seg, {"height": H, "width": W,
                      "model": {"mask2former": {"channels": 32, "heads": 2, "ffn_channels": 64, "num_queries": 8,
                                                "encoder_layers": 1, "decoder_layers": 1, "num_points": 256},
                                "segformer": {"channels": 32}, "fcn": {"channels": 32}},
                      "train": {"iters": 3, "log_interval": 1, "checkpoint_interval": 3, "threads": 1,
                                "num_workers": 0, "nproc": 1, **train}})
    return Params(seg, "segmenter")


def _config(data, variant="real", seed=0, work=None, **train):
    from synthdrive.segment.train import run_config

    kept = data["root"] / "kept.json"
    kept.write_text(json.dumps({"kept": [r["id"] for r in Dataset(data["synthetic"]).records][:4],
                                "ignore_class_ids": [8]}))
    return run_config(tiny_segmenter(**train), label_space="camvid11", variant=variant, seed=seed,
                      raw=data["raw"], synthetic=data["synthetic"], kept=kept,
                      work_dir=work or data["root"] / f"work-{variant}")


# --- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mask2former", "segformer", "fcn"])
def test_generated_config_builds_with_label_space_classes(data, name):
    import synthdrive.segment.data  # noqa: F401  (registers our plug-ins)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from synthdrive.segment.config import build_config

    register_all_modules()
    seg = tiny_segmenter().to_dict()
    seg["model"].update(name=name, backbone="native", pretrained=False)  # each model's own backbone
    cfg = build_config(seg, label_space="camvid11", train_sources=[dict(root=str(data["raw"]))], val_sources=[],
                       work_dir="unused", seed=0)
    model = MODELS.build(cfg.model)
    assert cfg.model.decode_head.num_classes == 11
    norms = {type(m).__name__ for m in model.modules()}
    assert "SyncBatchNorm" not in norms and "BatchNorm2d" in norms
    if name == "mask2former":
        assert model.decode_head.num_queries == 8
        assert model.decode_head.cls_embed.out_features == 12  # 11 classes + no-object
        assert type(model.backbone).__name__ == "ResNet" and model.backbone.depth == 18
    else:
        assert model.decode_head.conv_seg.out_channels == 11
    feats = model.extract_feat(torch.zeros(1, 3, H, W))
    assert len(feats) == 4 and feats[0].shape[-2:] == (H // 4, W // 4)


def test_config_errors_name_the_param(data, tmp_path):
    from synthdrive.segment.config import build_config

    seg = tiny_segmenter().to_dict()
    seg["model"]["name"] = "deeplab"
    with pytest.raises(UserError, match="segmenter.model.name"):
        build_config(seg, label_space="camvid11", train_sources=[], val_sources=[], work_dir="x", seed=0)
    seg["model"].update(name="mask2former", backbone="native", pretrained=False,
                        backbone_checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="segmenter.model.backbone_checkpoint"):
        build_config(seg, label_space="camvid11", train_sources=[], val_sources=[], work_dir="x", seed=0)


# --- data ----------------------------------------------------------------------------------------

def test_dataset_class_reads_our_format(data):
    from mmseg.utils import register_all_modules

    from synthdrive.segment.config import pipelines
    from synthdrive.segment.data import SynthDriveDataset, metainfo

    register_all_modules()
    _, test_pipeline = pipelines(H, W, tiny_segmenter()["train"].to_dict())
    kept_ids = [r["id"] for r in Dataset(data["synthetic"]).records][:2]
    ds = SynthDriveDataset(sources=[dict(root=str(data["raw"]), splits=["test"]),
                                    dict(root=str(data["synthetic"]), ids=kept_ids, role="extra",
                                         ignore_classes=[8])],
                           pipeline=test_pipeline, metainfo=metainfo("camvid11"))
    assert len(ds) == 8 + 2
    assert ds.metainfo["classes"][8] == "car"
    info = ds.get_data_info(0)
    assert info["condition"] == "clear-day" and info["role"] == "real"
    sample = ds[0]["data_samples"]
    raw = Dataset(data["raw"])
    np.testing.assert_array_equal(sample.gt_sem_seg.data.squeeze(0).numpy(), raw.label(info["frame_id"]))
    assert sample.metainfo["condition"] == "clear-day"
    synth = ds[8]["data_samples"].gt_sem_seg.data.numpy()
    assert (synth == 255).any() and not (synth == 8).any(), "ignore_classes must become 255"


def test_mixed_batches_keep_real_exposure_equal(data):
    """Count real frames per batch: the mixed variants see exactly the real-only variant's."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from synthdrive.segment.data import MixedInfiniteSampler

    init_default_scope("mmseg")
    counts = {}
    for variant in ("real", "real_synth", "real_aug"):
        cfg = _config(data, variant)
        loader = cfg.train_dataloader
        ds = DATASETS.build(loader.dataset)
        sampler = MixedInfiniteSampler(ds, **{k: v for k, v in loader.sampler.items() if k != "type"})
        stream = iter(sampler)
        batches = [[next(stream) for _ in range(loader.batch_size)] for _ in range(50)]
        roles = [[ds.get_data_info(i)["role"] for i in b] for b in batches]
        counts[variant] = sum(r.count("real") for r in roles)
        assert all(r.count("real") == 2 for r in roles)
        extra = [ds.get_data_info(i) for b in batches for i in b if ds.get_data_info(i)["role"] == "extra"]
        if variant == "real":
            assert not extra
        else:
            assert len(extra) == 50 * 2  # mix ratio 0.5 on top of 2 real frames
        if variant == "real_synth":
            assert {e["frame_id"] for e in extra} <= set(json.loads((data["root"] / "kept.json").read_text())["kept"])
        if variant == "real_aug":
            assert all(e["shift_to"] for e in extra) and {e["frame_id"] for e in extra} <= {
                r["id"] for r in Dataset(data["raw"]).split("train")}
        # every real train frame is seen once per pass over the real pool
        first_pass = [i for b in batches[:6] for i in b if ds.get_data_info(i)["role"] == "real"]
        assert sorted(first_pass) == sorted(sampler.pools["real"])
    assert counts["real"] == counts["real_synth"] == counts["real_aug"] == 100


def test_real_aug_shifts_statistics_toward_the_target(data):
    from synthdrive.conditions import Condition
    from synthdrive.segment.data import ConditionShift
    from synthdrive.segment.photometric import condition_stats, lab_stats, shift_to_condition

    raw = Dataset(data["raw"])
    stats = condition_stats(raw, raw.split("train"))
    assert set(stats) == {"clear-day", "clear-dusk", "rain-night"}
    day = [r for r in raw.split("train") if r["time_of_day"] == "day"]
    rng = np.random.default_rng(0)
    image = raw.image(day[0]["id"])
    before = lab_stats([image])
    dusk = shift_to_condition(image, Condition("clear", "dusk"), stats, rng)
    after = lab_stats([dusk])
    target = stats["clear-dusk"]["mean"][0]
    assert abs(after["mean"][0] - target) < abs(before["mean"][0] - target) / 3
    assert after["mean"][0] < before["mean"][0] - 10
    # a condition without real frames: presets (darker) plus fog overlay (lower contrast)
    fog_night = shift_to_condition(image, Condition("fog", "night"), {}, rng)
    assert lab_stats([fog_night])["std"][0] < before["std"][0]
    # rain adds streaks: pixels brighter than the transferred image appear
    rain = shift_to_condition(image, Condition("rain", "night"), stats, rng)
    plain = shift_to_condition(image, Condition("clear", "night"), {"clear-night": stats["rain-night"]}, rng)
    assert (rain.astype(int) - plain.astype(int) > 25).mean() > 0.005
    # the mmseg transform: BGR in, only frames that carry shift_to
    results = {"img": image[..., ::-1].copy(), "shift_to": ["clear-dusk"], "shift_stats": stats}
    out = ConditionShift()(results)
    assert out["condition"] == "clear-dusk" and out["img"].mean() < image.mean() - 10
    untouched = ConditionShift()({"img": image.copy(), "shift_to": []})
    np.testing.assert_array_equal(untouched["img"], image)


# --- training, checkpoints, metrics ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data):
    from synthdrive.segment.train import train

    torch.set_num_threads(1)
    cfg = _config(data, "real", work=data["root"] / "work-trained")
    out = data["root"] / "models" / "real-0"
    logged = []
    summary = train(cfg, out, log_fn=lambda m, step: logged.append((step, m)), log_interval=1)
    return {"out": out, "summary": summary, "logged": logged, "cfg": cfg}


def test_training_writes_weights_only_checkpoints_and_resumes(trained, data):
    from synthdrive.segment.train import safe_globals, train

    out, summary = trained["out"], trained["summary"]
    assert summary["iters"] == 3 and summary["real_samples_seen"] == 6 and summary["extra_samples_seen"] == 0
    assert [s for s, _ in trained["logged"]] == [1, 2, 3] and "loss" in trained["logged"][0][1]
    slim = torch.load(out / "model.pth", weights_only=True)  # tensors only: no allow-list needed
    assert any(k.startswith("decode_head.") for k in slim["state_dict"])
    assert slim["meta"]["dataset_meta"]["classes"][0] == "sky"
    full = Path(trained["cfg"].work_dir) / "iter_3.pth"
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(full, weights_only=True)
    with safe_globals():
        ckpt = torch.load(full, weights_only=True)
    assert ckpt["meta"]["iter"] == 3
    # same config, same work dir: the run resumes (at its end already, so it trains nothing)
    again = train(trained["cfg"], data["root"] / "models" / "again", log_fn=lambda m, s: None)
    assert again["resumed"] is True


def test_resume_needs_the_same_training_data(data, tmp_path):
    """Same config, same work dir, but a new generator wrote other images under the same names:
    the finished checkpoint of the old data must not be resumed."""
    import shutil

    from PIL import Image

    from synthdrive.segment.train import _maybe_resume

    synthetic = tmp_path / "synthetic"
    shutil.copytree(data["synthetic"], synthetic)
    cfg = _config({**data, "root": tmp_path, "synthetic": synthetic}, "real_synth", work=tmp_path / "work")
    first = cfg.copy()
    _maybe_resume(first, tmp_path / "work", resume=True)
    assert not first.resume  # nothing to resume yet
    (tmp_path / "work" / "last_checkpoint").write_text("iter_3.pth")
    same = cfg.copy()
    _maybe_resume(same, tmp_path / "work", resume=True)
    assert same.resume
    image = sorted((synthetic / "images").iterdir())[0]
    pixels = np.asarray(Image.open(image))
    Image.fromarray(255 - pixels).save(image)
    changed = cfg.copy()
    _maybe_resume(changed, tmp_path / "work", resume=True)
    assert not changed.resume


def test_resume_needs_the_same_training_code(data, tmp_path, monkeypatch, capsys):
    """DVC reruns train_segmenter after a code edit (a loss, the photometric control); the
    finished checkpoint of the old code must then not be resumed (zero iterations, the old model
    exported again). An interrupted run of the same code still continues where it stopped."""
    from synthdrive import codehash
    from synthdrive.segment.train import TRAINING_CODE, train

    torch.set_num_threads(1)
    work = tmp_path / "work"
    cfg = _config(data, "real", work=work, checkpoint_interval=1)

    class Interrupted(Exception):
        pass

    def interrupt(metrics, step):
        if step == 2:  # after iteration 1's checkpoint, before iteration 2's
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "a", log_fn=interrupt, log_interval=1)
    assert not (tmp_path / "a").exists()
    again = train(cfg, tmp_path / "b")  # the rerun continues after iteration 1
    assert again["resumed"] and again["trained_iters"] == 2
    # the same code in another checkout hashes the same; an edit of the photometric control there
    before = codehash.code_fingerprint(*TRAINING_CODE)
    copy = checkout_copy(tmp_path, monkeypatch)
    assert codehash.code_fingerprint(*TRAINING_CODE) == before
    capsys.readouterr()
    photometric = copy / "synthdrive" / "segment" / "photometric.py"
    photometric.write_text(photometric.read_text() + "\n# edited\n")
    edited = train(cfg, tmp_path / "d")
    assert not edited["resumed"] and edited["trained_iters"] == 3  # from step 0
    assert "resume: code changed since the checkpoint" in capsys.readouterr().out


def test_miou_matches_mmseg_iou_metric(trained, data):
    from mmseg.evaluation import IoUMetric

    from synthdrive.segment import evaluate as ev

    model = ev.load_segmenter(trained["out"])
    preds = ev.predict(model, data["raw"], splits=["val"], batch_size=2, keep={"f_val_000"})
    assert len(preds) == 4 and preds[0].pred.shape == (H, W)
    ours = ev.miou(preds, model.dataset_meta["classes"])
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = model.dataset_meta
    assert ours["mIoU"] == pytest.approx(metric.compute_metrics([p.areas for p in preds])["mIoU"])
    assert 0 <= ours["mIoU"] <= 100 and ours["frames"] == 4
    # a perfect prediction scores 100, classes absent from the frames have no IoU
    label = torch.from_numpy(Dataset(data["raw"]).label("f_val_000"))
    perfect = ev.Prediction("x", "clear-day", IoUMetric.intersect_and_union(label, label, 11, 255), None)
    result = ev.miou([perfect], model.dataset_meta["classes"])
    assert result["mIoU"] == 100.0 and result["per_class_iou"]["pedestrian"] is None


def test_gain_is_called_a_gain_only_beyond_the_seed_spread():
    from synthdrive.segment.evaluate import summarize

    def result(overall):
        return {"overall": {"mIoU": overall, "per_class_iou": {"sky": overall}},
                "conditions": {"clear-dusk": {"mIoU": overall}}}

    runs = {"real": {0: result(40.0), 1: result(42.0), 2: result(44.0)},
            "real_synth": {0: result(42.0), 1: result(43.0), 2: result(44.0)},
            "real_aug": {0: result(47.0), 1: result(47.5), 2: result(48.0)}}
    s = summarize(runs)
    assert s["variants"]["real"]["overall"] == {"mean": 42.0, "spread": 2.0, "n": 3, "values": [40.0, 42.0, 44.0]}
    assert s["gains"]["real_synth"]["overall"] == {"gain": 1.0, "verdict": "within seed spread"}
    assert s["gains"]["real_aug"]["clear-dusk"]["verdict"] == "gain"
    one = summarize({"real": {0: result(40.0)}, "real_synth": {0: result(45.0)}})
    assert one["gains"]["real_synth"]["overall"]["verdict"].startswith("undetermined")


def test_filter_and_evaluate_stages_write_per_condition_metrics(trained, data, workdir):
    """filter_synthetic and evaluate as stage scripts on the tiny data (models copied in)."""
    work = workdir.path
    shutil.copytree(data["raw"], work / "data/raw")
    shutil.copytree(data["synthetic"], work / "data/synthetic")
    write_conditions(Dataset(data["raw"]), work / "data/conditions.jsonl")
    from synthdrive.segment.train import VARIANTS

    assert "real_aug_synth" in VARIANTS
    for variant in VARIANTS:
        shutil.copytree(trained["out"], work / f"models/segmenter/{variant}-0")
    small = {"segmenter": {"seeds": [0]}, "classify": {"use": "truth"},
             "filter_synthetic": {"min_miou": 0.0, "ignore_classes": ["pole"], "threads": 1},
             "evaluate": {"threads": 1, "grid_frames": 3, "batch_size": 4,
                          "fid": {"height": H, "width": W, "kid_subset_size": 2}}}
    workdir.run("filter_synthetic", small)
    kept = json.loads((work / "data/synthetic_filter.json").read_text())
    assert len(kept["kept"]) == 6 and kept["ignore_class_ids"] == [2]
    assert set(kept["per_condition"]) == set(SYNTH_CONDITIONS)
    assert (work / "metrics/filter_synthetic_scores.png").stat().st_size > 1000
    workdir.run("evaluate")
    result = json.loads((work / "metrics/eval.json").read_text())
    assert result["rare_conditions"] == ["clear-dusk", "rain-night"]
    assert list(result["variants"]) == list(VARIANTS)  # pipeline order, not alphabetical
    assert list(result["gains"]) == [v for v in VARIANTS if v != "real"]
    for variant in VARIANTS:
        stats = result["variants"][variant]
        assert set(stats["conditions"]) == {"clear-day", "clear-dusk", "rain-night"}
        assert stats["overall"]["n"] == 1 and "rare" in stats
        per_run = result["runs"][variant]["0"]
        assert per_run["conditions"]["clear-dusk"]["frames"] == 2
        assert set(per_run["overall"]["per_class_iou"]) >= {"sky", "car"}
    # identical models: no gain, and one seed cannot call one anyway
    assert result["gains"]["real_synth"]["overall"]["gain"] == 0.0
    fid = result["fid"]["conditions"]
    assert set(fid) == {"clear-dusk", "rain-night", "all_targets"}
    assert fid["clear-dusk"]["fid"] is not None and fid["clear-dusk"]["real"] == 6
    for png in ("eval_miou_by_condition.png", "eval_predictions.png"):
        assert (work / "metrics" / png).stat().st_size > 1000
    # a changed threshold that keeps nothing is a clear error
    proc = workdir.run("filter_synthetic", {"filter_synthetic": {"min_miou": 101.0}}, check=False)
    assert proc.returncode == 1 and "filter_synthetic.min_miou" in proc.stderr


# --- distributed -----------------------------------------------------------------------------------

# slow: ~90 s; the torchrun relaunch (synthdrive.compute) runs by default in tests/generate/test_distributed.py
@pytest.mark.slow
def test_torchrun_two_cpu_processes(data, workdir):
    """The stage relaunches itself under torchrun (segmenter.train.nproc: 2); gloo on CPU."""
    work = workdir.path
    shutil.copytree(data["raw"], work / "data/raw")
    seg = tiny_segmenter(iters=2, nproc=2, checkpoint_interval=2).to_dict()
    proc = workdir.run("train_segmenter", {"segmenter": seg}, args=("--variant", "real", "--seed", "0"), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((work / "models/segmenter/real-0/train.json").read_text())
    assert summary["world_size"] == 2
    assert summary["real_samples_seen"] == 2 * 2 * 2  # iters x real batch x processes
    assert torch.load(work / "models/segmenter/real-0/model.pth", weights_only=True)["state_dict"]


def test_inception_fid_path_loads_a_local_weights_file(tmp_path, monkeypatch):
    """evaluate.fid.inception_weights: torchmetrics' Inception-v3 from a file (random weights here,
    written from the network's own layout; the real file is torch-fidelity's pt_inception-2015-12-05)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    from synthdrive.segment import evaluate as ev

    with monkeypatch.context() as patch:  # build the net without its download, keep its random init
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "pt_inception.pth"
    torch.save(net.state_dict(), weights)
    features = ev.inception_features(weights)
    key = "Conv2d_1a_3x3.conv.weight"
    assert torch.equal(features.state_dict()[key], net.state_dict()[key])  # the file's weights, not a download
    rng = np.random.default_rng(0)
    dark = [rng.integers(0, 60, (32, 48, 3), np.uint8) for _ in range(6)]
    bright = [rng.integers(150, 255, (32, 48, 3), np.uint8) for _ in range(6)]
    with torch.no_grad():
        out = features(torch.from_numpy(np.stack(dark[:2] + bright[:2])).permute(0, 3, 1, 2))
    assert out.shape == (4, 2048) and not torch.allclose(out[0], out[2])  # 2048-d pool features
    scores = ev.fid_kid(features, dark, bright, kid_subset_size=3)
    assert scores["real"] == scores["synthetic"] == 6 and np.isfinite(scores["fid"]) and scores["fid"] >= 0
    with pytest.raises(UserError, match="evaluate.fid.inception_weights"):
        ev.inception_features(tmp_path / "missing.pth")


# --- a model folder is data, not code (config.json, weights_only checkpoints) -----------------------

def _planted_pickle(path: Path, marker: Path, state: dict | None = None) -> Path:
    """A checkpoint whose unpickling runs ``touch marker`` (tests.helpers.RunsCode, the payload of
    tests/test_safe_loading.py)."""
    from tests.helpers import RunsCode

    torch.save({"state_dict": state or {"w": torch.zeros(1)}, "meta": {"payload": RunsCode(marker)}}, path)
    return path



def test_model_folder_config_is_stored_and_read_as_data(trained, data, tmp_path):
    from synthdrive.segment import evaluate as ev
    from synthdrive.segment.config import load_config

    out = trained["out"]
    assert not (out / "config.py").exists()
    stored = json.loads((out / "config.json").read_text())  # plain JSON
    assert stored["model"]["type"] == "EncoderDecoder"
    cfg = load_config(out)
    assert cfg.to_dict() == {**trained["cfg"].to_dict(), "resume": False, "launcher": "none"}
    assert isinstance(cfg.test_pipeline[1]["scale"], tuple)  # tuples survive (mmcv's Resize needs one)
    # a folder from before (an mmengine Python config) is parsed, not executed, and still loads
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cfg.dump(str(old / "config.py"))
    (old / "config.json").unlink()
    assert load_config(old).to_dict() == cfg.to_dict()
    preds = ev.predict(ev.load_segmenter(old), data["raw"], splits=["val"], batch_size=4)
    ref = ev.predict(ev.load_segmenter(out), data["raw"], splits=["val"], batch_size=4)
    assert [p.areas[0].tolist() for p in preds] == [p.areas[0].tolist() for p in ref]


@pytest.mark.parametrize("code", [
    "import os\nos.system('touch {marker}')\nmodel = dict(type='EncoderDecoder')\n",
    "model = dict(type=__import__('os').system('touch {marker}'))\n",
    "model = dict(type='EncoderDecoder', backbone=[open('{marker}', 'w')])\n",
], ids=["statement", "call", "builtin"])
def test_old_config_py_that_runs_code_is_refused(trained, tmp_path, code):
    from synthdrive.segment import evaluate as ev

    folder = tmp_path / "shared"
    shutil.copytree(trained["out"], folder)
    (folder / "config.json").unlink()
    marker = tmp_path / "ran"
    (folder / "config.py").write_text(code.format(marker=marker))
    with pytest.raises(UserError) as e:
        ev.load_segmenter(folder)
    assert "retrain" in one_line(e, folder / "config.py")
    assert not marker.exists()


def test_config_json_naming_an_importable_function_is_refused(trained, tmp_path):
    """mmengine resolves an unregistered dotted ``type`` by importing it and calls it with the
    dict's other keys: JSON alone is not enough, the types are checked too."""
    from mmseg.registry import MODELS

    from synthdrive.segment import evaluate as ev

    marker = tmp_path / "ran"
    evil = {"type": "subprocess.getoutput", "cmd": f"touch {marker}"}
    MODELS.build(dict(evil))  # what building it would do
    assert marker.exists()
    marker.unlink()
    folder = tmp_path / "shared"
    shutil.copytree(trained["out"], folder)
    stored = json.loads((folder / "config.json").read_text())
    stored["model"]["backbone"] = evil
    (folder / "config.json").write_text(json.dumps(stored))
    with pytest.raises(UserError) as e:
        ev.load_segmenter(folder)
    one_line(e, folder / "config.json", "model.backbone.type", "subprocess.getoutput")
    assert not marker.exists()


def test_segmenter_weights_that_run_code_are_refused(trained, tmp_path, monkeypatch):
    from synthdrive.segment import evaluate as ev

    folder = tmp_path / "shared"
    shutil.copytree(trained["out"], folder)
    marker = tmp_path / "ran"
    state = torch.load(folder / "model.pth", weights_only=True)["state_dict"]
    _planted_pickle(folder / "model.pth", marker, state)
    with pytest.raises(UserError) as e:
        ev.load_segmenter(folder)
    one_line(e, folder / "model.pth")
    assert not marker.exists()
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns torch's default off, not an explicit weights_only=True
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserError):
        ev.load_segmenter(folder)
    assert not marker.exists()


def test_backbone_checkpoint_that_runs_code_is_refused(data, tmp_path):
    from synthdrive.segment.config import SegmenterConfigError

    marker = tmp_path / "ran"
    planted = _planted_pickle(tmp_path / "backbone.pth", marker)
    with pytest.raises(SegmenterConfigError) as e:
        _backbone_config(data, planted)
    one_line(e, "segmenter.model.backbone_checkpoint", planted)
    assert not marker.exists()
    fine = tmp_path / "fine.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, fine)
    cfg = _backbone_config(data, fine)
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint=str(fine.resolve()))


def _backbone_config(data, checkpoint: Path):
    from synthdrive.segment.config import build_config

    seg = tiny_segmenter().to_dict()
    seg["model"].update(backbone="native", pretrained=False, backbone_checkpoint=str(checkpoint))
    return build_config(seg, label_space="camvid11", train_sources=[dict(root=str(data["raw"]))],
                        val_sources=[], work_dir=data["root"] / "work-backbone", seed=0)


@pytest.mark.parametrize("name", ["mask2former", "segformer", "fcn"])
def test_every_generated_config_round_trips_as_data(data, tmp_path, name):
    """Every registry type build_config emits (all models, every option) is in the allow-list
    and the stored JSON reads back equal, tuples included."""
    from synthdrive.segment.config import build_config, load_config, save_config

    seg = tiny_segmenter(val_interval=1, mlflow_vis_backend=True, photometric_distortion=True).to_dict()
    seg["model"]["name"] = name
    cfg = build_config(seg, label_space="camvid11", train_sources=[dict(root=str(data["raw"]))],
                       val_sources=[dict(root=str(data["raw"]))], work_dir=tmp_path / "work", seed=0,
                       extra_per_batch=1, tracking_uri="http://127.0.0.1:5000")
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path).to_dict() == cfg.to_dict()


# --- real_aug_synth (issue 16) --------------------------------------------------------------------

def _batches(cfg, n):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from synthdrive.segment.data import MixedInfiniteSampler

    init_default_scope("mmseg")
    loader = cfg.train_dataloader
    ds = DATASETS.build(loader.dataset)
    sampler = MixedInfiniteSampler(ds, **{k: v for k, v in loader.sampler.items() if k != "type"})
    stream = iter(sampler)
    return ds, sampler, [[ds.get_data_info(next(stream)) for _ in range(loader.batch_size)] for _ in range(n)]


def _kind(info) -> str:
    if info["role"] == "real":
        return "real"
    return "shifted" if info["shift_to"] else "synthetic"


def test_real_aug_synth_batches_hold_real_shifted_and_synthetic_frames(data):
    """A full real batch (the real variant's) plus real_aug's / real_synth's number of extra frames,
    half photometrically shifted real train frames, half kept synthetic frames."""
    _, _, real_batches = _batches(_config(data, "real"), 40)
    _, _, synth_batches = _batches(_config(data, "real_synth"), 40)
    ds, sampler, batches = _batches(_config(data, "real_aug_synth"), 40)
    train_ids = {r["id"] for r in Dataset(data["raw"]).split("train")}
    kept = set(json.loads((data["root"] / "kept.json").read_text())["kept"])
    assert all(len(b) == len(s) == 4 for b, s in zip(batches, synth_batches))  # same batch size
    for batch in batches:
        kinds = [_kind(i) for i in batch]
        assert kinds.count("real") == 2 and kinds.count("shifted") == 1 and kinds.count("synthetic") == 1
        for info in batch:
            if _kind(info) == "shifted":
                assert info["frame_id"] in train_ids and info["pool"] == "shifted"
            elif _kind(info) == "synthetic":
                assert info["frame_id"] in kept and info["pool"] == "synthetic"
                assert info["label_map"] == {8: 255}  # the filter's ignore classes: synthetic labels only
            else:
                assert info["frame_id"] in train_ids and info["label_map"] is None
    # equal real exposure: the same real frames, in the same order, as the real variant's
    assert [[i["frame_id"] for i in b if i["role"] == "real"] for b in batches] == \
           [[i["frame_id"] for i in b] for b in real_batches]
    # each pool is drawn in the order real_aug / real_synth draw theirs: the same frames, half as many
    _, _, aug_batches = _batches(_config(data, "real_aug"), 40)
    def order(bs, kind):
        return [i["frame_id"] for b in bs for i in b if _kind(i) == kind]
    assert order(batches, "shifted") == order(aug_batches, "shifted")[:40]
    assert order(batches, "synthetic") == order(synth_batches, "synthetic")[:40]
    # each extra pool is the whole of what real_aug / real_synth draw from
    assert len(sampler.sub_pools["shifted"]) == 12 and len(sampler.sub_pools["synthetic"]) == len(kept)
    assert sampler.extra_seen(40) == {"shifted": 40, "synthetic": 40}


def test_an_odd_extra_share_alternates_between_the_pools(data):
    """mix.ratio 0.6 on 2 real frames = 3 extra: the odd slot alternates, equal over two batches."""
    cfg = _config(data, "real_aug_synth")
    cfg.train_dataloader.sampler.extra_per_batch = 3
    cfg.train_dataloader.batch_size = 5
    _, sampler, batches = _batches(cfg, 10)
    per_batch = [([_kind(i) for i in b].count("shifted"), [_kind(i) for i in b].count("synthetic")) for b in batches]
    assert per_batch == [(2, 1), (1, 2)] * 5
    assert all([_kind(i) for i in b].count("real") == 2 for b in batches)
    assert sampler.extra_seen(10) == {"shifted": 15, "synthetic": 15}
    assert sampler.extra_seen(3) == {"shifted": 5, "synthetic": 4}


def test_real_aug_synth_needs_the_kept_list(data, tmp_path):
    from synthdrive.segment.train import run_config

    with pytest.raises(UserError, match="filter_synthetic"):
        run_config(tiny_segmenter(), label_space="camvid11", variant="real_aug_synth", seed=0,
                   raw=data["raw"], synthetic=data["synthetic"], kept=tmp_path / "missing.json",
                   work_dir=tmp_path / "work")


def test_real_aug_synth_trains_and_records_its_exposure(data, tmp_path):
    from synthdrive.segment.train import train

    cfg = _config(data, "real_aug_synth", work=tmp_path / "work", iters=2, checkpoint_interval=2)
    summary = train(cfg, tmp_path / "out")
    assert summary["real_samples_seen"] == 2 * 2 and summary["extra_samples_seen"] == 2 * 2
    assert summary["extra_samples_seen.shifted"] == summary["extra_samples_seen.synthetic"] == 2
    assert summary["extra_pool.shifted"] == 12 and summary["extra_pool.synthetic"] == 4
    assert json.loads((tmp_path / "out" / "train.json").read_text())["extra_samples_seen.synthetic"] == 2


def test_summary_reports_real_aug_synth_like_every_variant():
    from synthdrive.segment.evaluate import summarize

    def result(overall):
        return {"overall": {"mIoU": overall, "per_class_iou": {"sky": overall}},
                "rare": {"mIoU": overall + 1}, "conditions": {"clear-dusk": {"mIoU": overall}}}

    s = summarize({"real": {0: result(40.0), 1: result(41.0)}, "real_aug": {0: result(41.0), 1: result(41.5)},
                   "real_synth": {0: result(40.5), 1: result(41.0)},
                   "real_aug_synth": {0: result(45.0), 1: result(45.5)}})
    assert list(s["variants"]) == ["real", "real_aug", "real_synth", "real_aug_synth"]
    stats = s["variants"]["real_aug_synth"]
    assert stats["overall"]["mean"] == 45.25 and stats["per_class_iou"]["sky"] == 45.25
    gains = s["gains"]["real_aug_synth"]
    assert set(gains) == {"overall", "rare", "clear-dusk"}
    assert gains["overall"] == {"gain": 4.75, "verdict": "gain"}


@pytest.mark.parametrize("run,stage", [
    ("real-0", "train_segmenter@real-0"), ("real_aug-2", "train_segmenter@real_aug-2"),
    ("real_synth-0", "train_segmenter_synth@real_synth-0"),
    ("real_aug_synth-1", "train_segmenter_synth@real_aug_synth-1"),
    ("out", "train_segmenter (or train_segmenter_synth)")])
def test_a_missing_run_names_the_stage_that_trains_it(tmp_path, run, stage):
    """The synthetic variants train in train_segmenter_synth (dvc.yaml), not train_segmenter."""
    from synthdrive.segment import evaluate as ev

    with pytest.raises(UserError) as e:
        ev.check_segmenter_dir(tmp_path / run)
    assert f"run `dvc repro {stage}` first" in one_line(e, tmp_path / run / "model.pth")


# --- segmenter.model.backbone: EfficientNet-Lite encoders (synthdrive.segment.backbones) ----------

def _backbone_seg(name="mask2former", backbone="efficientnet_lite0", pretrained=False, **model) -> dict:
    seg = tiny_segmenter().to_dict()
    seg["model"].update(name=name, backbone=backbone, pretrained=pretrained,
                        **{"backbone_lr_mult": "auto", **model})
    return seg


def _build_backbone_config(data, seg, tmp_path, **kw):
    from synthdrive.segment.config import build_config

    return build_config(seg, label_space="camvid11", train_sources=[dict(root=str(data["raw"]))],
                        val_sources=[], work_dir=tmp_path / "work", seed=0, **kw)


def test_backbone_lists_match_the_encoders():
    from synthdrive import params_schema, pretrained
    from synthdrive.segment import backbones, config

    assert set(params_schema.SEGMENTER_BACKBONES) == set(config.BACKBONES)
    for variant, channels in backbones.CHANNELS.items():
        net = pretrained.encoder(variant, pretrained=False)
        assert tuple(net.feature_info.channels()) == channels
        assert tuple(net.feature_info.reduction()) == backbones.STRIDES


@pytest.mark.parametrize("name,backbone", [
    ("mask2former", "efficientnet_lite0"), ("mask2former", "efficientnet_lite1"),
    ("mask2former", "efficientnet_lite2"), ("segformer", "efficientnet_lite0"), ("fcn", "efficientnet_lite2"),
])
def test_efficientnet_backbone_config_builds_and_round_trips(data, tmp_path, name, backbone):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from synthdrive.segment import backbones
    from synthdrive.segment.config import load_config, save_config

    register_all_modules()
    cfg = _build_backbone_config(data, _backbone_seg(name, backbone), tmp_path)
    assert cfg.model.backbone.type == "EfficientNetLiteBackbone"
    channels = backbones.CHANNELS[backbones.EFFICIENTNET_LITE[backbone]]
    head = cfg.model.decode_head
    assert (head.in_channels == channels[3]) if name == "fcn" else (list(head.in_channels) == list(channels))
    model = MODELS.build(cfg.model)
    feats = model.extract_feat(torch.zeros(1, 3, H, W))
    assert [f.shape[1] for f in feats] == list(channels)
    assert [f.shape[-1] for f in feats] == [W // s for s in backbones.STRIDES]
    model.eval()
    out = model.predict(torch.zeros(1, 3, H, W))  # the head runs on these features
    assert out[0].pred_sem_seg.data.shape[-2:] == (H, W)
    save_config(cfg, tmp_path / "config.json")  # the type is allowed on load and the config is data
    assert load_config(tmp_path).to_dict() == cfg.to_dict()


def test_pretrained_backbone_holds_the_imagenet_weights(data, tmp_path):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from synthdrive import pretrained

    register_all_modules()
    reference = pretrained.encoder(0, pretrained=True).state_dict()
    models = {}
    for flag in (True, False):
        cfg = _build_backbone_config(data, _backbone_seg(pretrained=flag), tmp_path)
        model = MODELS.build(cfg.model)
        model.init_weights()  # what the Runner does before training: must not re-initialise them
        models[flag] = model.backbone.encoder.state_dict()
    assert models[True].keys() == reference.keys()
    assert all(torch.equal(models[True][k], reference[k]) for k in reference)
    weights = [k for k in reference if k.endswith("weight") and reference[k].ndim == 4]
    assert not any(torch.equal(models[False][k], reference[k]) for k in weights)


def test_backbone_lr_mult_lowers_the_backbone_lr(data, tmp_path):
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    native = _build_backbone_config(data, _backbone_seg(backbone="native"), tmp_path)
    assert "backbone" not in native.optim_wrapper.paramwise_cfg.custom_keys  # as before the param
    scratch = _build_backbone_config(data, _backbone_seg(pretrained=False), tmp_path)
    assert "backbone" not in scratch.optim_wrapper.paramwise_cfg.custom_keys
    explicit = _build_backbone_config(data, _backbone_seg(pretrained=False, backbone_lr_mult=0.5), tmp_path)
    assert explicit.optim_wrapper.paramwise_cfg.custom_keys["backbone"]["lr_mult"] == 0.5
    cfg = _build_backbone_config(data, _backbone_seg(pretrained=True), tmp_path)  # auto: 0.1
    model = MODELS.build(cfg.model)
    lr = cfg.optim_wrapper.optimizer.lr
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    ids = {id(p) for p in model.backbone.parameters()}
    backbone_lrs = {g["lr"] for g in groups if id(g["params"][0]) in ids}
    head_lrs = {g["lr"] for g in groups if id(g["params"][0]) not in ids}
    assert len(backbone_lrs) == 1 and backbone_lrs.pop() == pytest.approx(0.1 * lr) and head_lrs == {lr}


@pytest.mark.parametrize("model,param", [
    (dict(backbone="resnet9"), "segmenter.model.backbone"),
    (dict(backbone="native", pretrained=True), "segmenter.model.pretrained"),
    (dict(backbone="efficientnet_lite0", backbone_checkpoint="x.pth"), "segmenter.model.backbone_checkpoint"),
    (dict(backbone="efficientnet_lite0", backbone_lr_mult=0), "segmenter.model.backbone_lr_mult"),
], ids=["unknown", "native-pretrained", "lite-checkpoint", "lr-mult"])
def test_backbone_param_errors_name_the_param(data, tmp_path, model, param):
    seg = tiny_segmenter().to_dict()
    seg["model"].update(model)
    with pytest.raises(UserError) as e:
        _build_backbone_config(data, seg, tmp_path)
    one_line(e, param)


def test_training_with_a_pretrained_efficientnet_backbone(data, tmp_path):
    from synthdrive.segment import evaluate as ev
    from synthdrive.segment.train import run_config, train

    torch.set_num_threads(1)
    seg = _backbone_seg(pretrained=True)
    seg["train"].update(iters=2, checkpoint_interval=2)
    cfg = run_config(Params(seg, "segmenter"), label_space="camvid11", variant="real", seed=0,
                     raw=data["raw"], synthetic=data["synthetic"], kept=data["root"] / "unused.json",
                     work_dir=tmp_path / "work")
    out = tmp_path / "model"
    summary = train(cfg, out, log_fn=lambda m, s: None)
    assert summary["trained_iters"] == 2 and np.isfinite(summary["final_losses"]["train/loss"])
    stored = json.loads((out / "config.json").read_text())
    assert stored["model"]["backbone"]["type"] == "EfficientNetLiteBackbone"
    model = ev.load_segmenter(out)  # built from config.json, the trained weights loaded over ImageNet's
    slim = torch.load(out / "model.pth", weights_only=True)["state_dict"]
    key = "backbone.encoder.conv_stem.weight"
    assert torch.equal(model.state_dict()[key], slim[key])
    preds = ev.predict(model, data["raw"], splits=["val"], batch_size=4)
    assert len(preds) == 4
