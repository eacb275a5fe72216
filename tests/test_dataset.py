import json

import numpy as np
import pytest

from synthdrive import viz
from synthdrive.dataset import Dataset, DatasetError, DatasetWriter, atomic_dir


def _frame(h=8, w=12, value=1):
    return np.full((h, w, 3), 100, np.uint8), np.full((h, w), value, np.uint8)


def test_write_read_validate(tmp_path):
    with DatasetWriter(tmp_path / "ds", "camvid11", source="test") as w:
        for i in range(3):
            w.add({"id": f"f{i}", "split": "train", "weather": "clear", "time_of_day": "day"}, *_frame())
    ds = Dataset(tmp_path / "ds")
    ds.validate()
    assert len(ds) == 3 and ds.meta["source"] == "test"
    assert ds.image("f0").shape == (8, 12, 3) and ds.label("f0").max() == 1


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds", "camvid11") as w:
            w.add({"id": "a", "split": "train"}, *_frame())
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_old_output_atomically(tmp_path):
    for n in (3, 1):
        with atomic_dir(tmp_path / "out") as d:
            for i in range(n):
                (d / f"{i}.txt").write_text("x")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_mismatched_sizes_rejected_on_write(tmp_path):
    image, _ = _frame()
    with pytest.raises(DatasetError, match="differs"):
        with DatasetWriter(tmp_path / "ds", "camvid11") as w:
            w.add({"id": "a", "split": "train"}, image, np.zeros((4, 4), np.uint8))


def _written(tmp_path):
    with DatasetWriter(tmp_path / "ds", "camvid11") as w:
        w.add({"id": "a", "split": "train"}, *_frame())
    return tmp_path / "ds"


def test_validate_names_corrupt_png(tmp_path):
    root = _written(tmp_path)
    (root / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match=r"images/a\.png: unreadable"):
        Dataset(root).validate()


def test_validate_names_label_out_of_space(tmp_path):
    root = _written(tmp_path)
    viz.save_png(np.full((8, 12), 40, np.uint8), root / "labels" / "a.png")
    with pytest.raises(DatasetError, match=r"labels/a\.png: class ids \[40\] outside"):
        Dataset(root).validate()


def test_validate_names_size_mismatch(tmp_path):
    root = _written(tmp_path)
    viz.save_png(np.zeros((4, 4), np.uint8), root / "labels" / "a.png")
    with pytest.raises(DatasetError, match=r"labels/a\.png: label is 4x4 but its image is 12x8"):
        Dataset(root).validate()


def test_missing_index_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="dvc repro collect"):
        Dataset(tmp_path)


def test_bad_jsonl_line_is_named(tmp_path):
    root = _written(tmp_path)
    (root / "index.jsonl").write_text(json.dumps({"id": "a", "split": "train"}) + "\n{oops\n")
    with pytest.raises(DatasetError, match=r"index.jsonl:2"):
        Dataset(root)


def test_dataset_grid_png(tmp_path):
    with DatasetWriter(tmp_path / "ds", "camvid11") as w:
        for i, (weather, tod) in enumerate([("clear", "day"), ("rain", "night"), ("clear", "day")]):
            w.add({"id": f"f{i}", "split": "train", "weather": weather, "time_of_day": tod}, *_frame())
    out = viz.dataset_grid(Dataset(tmp_path / "ds"), tmp_path / "grid.png")
    from PIL import Image

    grid = np.asarray(Image.open(out))
    assert grid.shape[1] >= 2 * 2 * 12  # two conditions, each image|label
