"""The folder collector (CamVid / generic images+labels) and the collect stage's bad-input errors."""
import shutil

import numpy as np
import pytest
from PIL import Image

from synthdrive.dataset import Dataset, DatasetError
from tests.helpers import REPO, make_folder_dataset

FOLDER = {"collect": {"source": "folder", "height": 16, "width": 24}}


def _folder_params(path, **extra):
    return {"collect": {**FOLDER["collect"], "folder": {"path": str(path), **extra}}}


def test_imports_and_maps_labels(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src", n=3, num_classes=12)
    workdir.run("collect", _folder_params(src))
    ds = Dataset(workdir.path / "data/raw")
    ds.validate()
    assert [r["split"] for r in ds.records] == ["train"] * 3
    assert [r["time_of_day"] for r in ds.records] == ["dusk", "day", "day"]  # 0001TP is dusk
    raw = np.asarray(Image.open(src / "train/labels/0001TP_00000.png").resize((24, 16), Image.NEAREST))
    label = ds.label(ds.records[0]["id"])
    assert label.shape == (16, 24)
    assert ((raw == 11) == (label == 255)).all()  # CamVid void -> ignore
    assert (workdir.path / "metrics/collect_samples.png").is_file()


def _fails(workdir, overrides, pattern):
    proc = workdir.run("collect", overrides, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in proc.stderr
    assert pattern in last, last
    assert not (workdir.path / "data/raw").exists()
    return last


def test_corrupt_png_is_named_and_leaves_no_output(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src")
    bad = src / "train/images/0016E5_00002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    _fails(workdir, _folder_params(src), f"{bad}: unreadable image")


def test_label_size_mismatch_is_named(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src")
    label = src / "train/labels/0016E5_00001.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(label)
    _fails(workdir, _folder_params(src), f"{label}: label is 5x5 but its image is 32x24")


def test_label_id_outside_space_is_named(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src")
    label = src / "train/labels/0016E5_00001.png"
    Image.fromarray(np.full((24, 32), 77, np.uint8)).save(label)
    msg = _fails(workdir, _folder_params(src), f"{label}: class ids [77] outside label space camvid11")
    assert "collect.folder.label_map" in msg


def test_label_map_fixes_foreign_ids(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src", n=2)
    Image.fromarray(np.full((24, 32), 77, np.uint8)).save(src / "train/labels/0016E5_00001.png")
    workdir.run("collect", _folder_params(src, label_map={77: 3}))
    ds = Dataset(workdir.path / "data/raw")
    assert (ds.label(ds.records[1]["id"]) == 3).all()


def test_image_without_label_is_named(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src")
    (src / "train/labels/0016E5_00001.png").unlink()
    _fails(workdir, _folder_params(src), "0016E5_00001.png: image has no label")


def test_unknown_source_names_the_param(workdir):
    msg = _fails(workdir, {"collect": {"source": "kitti"}}, "collect.source='kitti' is unknown")
    assert "procedural" in msg


def test_missing_param_is_named(tmp_path, workdir):
    import yaml

    workdir.set_params(_folder_params(make_folder_dataset(tmp_path / "src")))
    params = yaml.safe_load((workdir.path / "params.yaml").read_text())
    del params["collect"]["height"]
    (workdir.path / "params.yaml").write_text(yaml.safe_dump(params))
    _fails(workdir, None, "missing param 'collect.height'")


def test_flat_layout(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src", n=2)
    (src / "train/images").rename(src / "images")
    (src / "train/labels").rename(src / "labels")
    workdir.run("collect", _folder_params(src, layout="flat", flat_split="test", condition_rule="unknown"))
    ds = Dataset(workdir.path / "data/raw")
    assert [r["split"] for r in ds.records] == ["test", "test"]
    assert ds.records[0]["weather"] is None


def test_real_camvid_import(camvid, workdir):
    workdir.run("collect", _folder_params(camvid) | {"collect": {**FOLDER["collect"], "height": 90,
                                                                 "width": 120, "folder": {"path": str(camvid)}}})
    ds = Dataset(workdir.path / "data/raw")
    assert len(ds.split("train")) == 367 and len(ds.split("val")) == 101
    assert sum(r["time_of_day"] == "dusk" for r in ds.records) == 62
    ds.validate()
    label = ds.label(ds.split("val")[0]["id"])
    assert label.shape == (90, 120) and set(np.unique(label)) <= set(range(11)) | {255}


def test_resplit_moves_frames_by_name(tmp_path, workdir):
    src = make_folder_dataset(tmp_path / "src", n=3)
    workdir.run("collect", _folder_params(src, resplit=[{"match": "train/0001TP_*", "split": "test"}]))
    ds = Dataset(workdir.path / "data/raw")
    assert {r["id"]: r["split"] for r in ds.records} == {
        "test_0001TP_00000": "test", "train_0016E5_00001": "train", "train_0016E5_00002": "train"}


@pytest.mark.parametrize("rule, expected", [
    ({"match": "train/*", "split": "holdout"}, "collect.folder.resplit[0]"),
    ({"match": "val/*", "split": "test"}, "matches no frame"),
])
def test_resplit_bad_rules_are_named(tmp_path, workdir, rule, expected):
    src = make_folder_dataset(tmp_path / "src")
    msg = _fails(workdir, _folder_params(src, resplit=[rule]), expected)
    assert "collect.folder.resplit" in msg
    assert not (workdir.path / "data/raw").exists()


def test_camvid_profile_holds_out_a_dusk_block(camvid, workdir):
    """The CamVid profile (sweep `camvid` in experiments/sweeps.yaml) gives a test split with real
    dusk and day frames; its -S values reach the stage as DVC would write them."""
    from synthdrive import sweep

    profile = sweep.expand("camvid", sweep.load_sweep("camvid", REPO / "experiments/sweeps.yaml"))[0]
    resplit = profile["collect.folder.resplit"]
    workdir.run("collect", {"collect": {"source": "folder", "height": 45, "width": 60,
                                        "folder": {"path": str(camvid), "resplit": resplit}}})
    ds = Dataset(workdir.path / "data/raw")
    test = ds.split("test")
    assert sum(r["time_of_day"] == "dusk" for r in test) == 18
    assert sum(r["time_of_day"] == "day" for r in test) == 80
    assert sum(r["time_of_day"] == "dusk" for r in ds.split("train")) == 44
    assert len(ds.split("val")) == 21
    # outside the repo, so queued absolute (a queued experiment runs in a temp copy of the repo)
    assert profile["collect.folder.path"] == str((REPO / "../shared/data/camvid").resolve())


def test_two_images_with_one_frame_id_are_named(tmp_path, workdir):
    """x.png beside x.jpg would give two records with one id sharing labels/x.png."""
    src = make_folder_dataset(tmp_path / "src")
    png = src / "train/images/0016E5_00001.png"
    jpg = png.with_suffix(".jpg")
    Image.open(png).save(jpg)
    msg = _fails(workdir, _folder_params(src), "both give frame id 'train_0016E5_00001'")
    assert str(png) in msg and str(jpg) in msg


def test_resplit_into_one_id_is_named(tmp_path):
    """The same file name in two splits that resplit moves into one split: one id, two files."""
    from synthdrive.collect import collect
    from synthdrive.params import Params

    src = make_folder_dataset(tmp_path / "src", n=2)
    shutil.copytree(src / "train", src / "val")
    cfg = {"source": "folder", "height": 16, "width": 24,
           "folder": {"path": str(src), "label_space": "camvid11", "label_map": {}, "ignore_ids": [11],
                      "condition_rule": "camvid", "resplit": [{"match": "val/*", "split": "train"}]}}
    with pytest.raises(DatasetError, match=r"val/images/0001TP_00000\.png: both give frame id 'train_0001TP_00000'"):
        collect(Params(cfg, "collect"), "camvid11", tmp_path / "raw")
    assert not any(tmp_path.glob("*raw*"))
