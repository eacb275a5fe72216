"""collect and synthesize run Dataset.validate() on what they wrote before it is moved into place:
a fault is one DatasetError naming the file, and no output (nor temp folder) is left."""
from __future__ import annotations

import numpy as np
import pytest

from synthdrive import collect as collect_mod
from synthdrive.dataset import DatasetError, DatasetWriter
from synthdrive.params import Params


def collect(cfg, writer, label_space):
    """A collector (stands in for synthdrive.collect.<source>) whose second frame has a label id
    outside camvid11 (DatasetWriter.add does not look at label values)."""
    for i, value in enumerate((1, 40)):
        writer.add({"id": f"train_{i}", "split": "train", "weather": "clear", "time_of_day": "day",
                    "source": "test"}, np.zeros((cfg["height"], cfg["width"], 3), np.uint8),
                   np.full((cfg["height"], cfg["width"]), value, np.uint8))


def test_collect_validates_before_the_output_is_moved_into_place(tmp_path, monkeypatch):
    monkeypatch.setitem(collect_mod.COLLECTORS, "procedural", __name__)
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'raw'}/labels/train_1\.png: class ids \[40\] outside"):
        collect_mod.collect(Params({"source": "procedural", "height": 8, "width": 12}, "collect"), "camvid11",
                            tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_validate_checks_sizes_against_meta_and_names_duplicate_origins(tmp_path):
    from synthdrive.dataset import Dataset, write_json, write_jsonl

    # the writer validates what it wrote: a frame unlike meta.json's size leaves no output
    with pytest.raises(DatasetError, match=r"images/a\.png: image is 10x8 but meta.json says 12x8 "
                                           r"\(nothing was written"):
        with DatasetWriter(tmp_path / "ds", "camvid11", height=8, width=12) as w:
            w.add({"id": "a", "split": "train", "origin": "x.png"}, np.zeros((8, 10, 3), np.uint8),
                  np.zeros((8, 10), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with DatasetWriter(tmp_path / "ds", "camvid11", height=8, width=10) as w:
        w.add({"id": "a", "split": "train", "origin": "x.png"}, np.zeros((8, 10, 3), np.uint8),
              np.zeros((8, 10), np.uint8))
    write_json(tmp_path / "ds" / "meta.json", {"label_space": "camvid11", "height": 8, "width": 12})
    with pytest.raises(DatasetError, match=r"images/a\.png: image is 10x8 but meta.json says 12x8"):
        Dataset(tmp_path / "ds").validate()
    write_jsonl(tmp_path / "ds" / "index.jsonl", [{"id": "a", "split": "train", "origin": "x.png"},
                                                  {"id": "a", "split": "train", "origin": "x.jpg"}])
    with pytest.raises(DatasetError, match=r"index\.jsonl:2: duplicate id 'a' \(from x\.png and x\.jpg\)"):
        Dataset(tmp_path / "ds").validate()
    write_jsonl(tmp_path / "ds" / "index.jsonl", [{"id": "a", "split": "holdout"}])
    with pytest.raises(DatasetError, match=r"index\.jsonl:1: frame a has split 'holdout'"):
        Dataset(tmp_path / "ds").validate()


class _Generator:
    backend, size = "fake", (8, 12)

    def sample(self, layouts, conditions, seeds, prompts=None, **sampler):
        return np.zeros((len(layouts), *self.size, 3), np.uint8)


def test_synthesize_validates_before_the_output_is_moved_into_place(tmp_path):
    from synthdrive.conditions import Condition
    from synthdrive.dataset import Dataset, write_json
    from synthdrive.synthesize import synthesize
    from synthdrive.synthesize.planner import Job

    # a raw dataset whose meta.json disagrees with its frames: the synthetic copy inherits the size
    with DatasetWriter(tmp_path / "raw", "camvid11", height=16, width=20) as w:
        w.add({"id": "r0", "split": "train", "weather": "clear", "time_of_day": "day"},
              np.zeros((16, 20, 3), np.uint8), np.zeros((16, 20), np.uint8))
    write_json(tmp_path / "raw" / "meta.json", {"label_space": "camvid11", "height": 16, "width": 24})
    raw = Dataset(tmp_path / "raw")
    jobs = [Job(0, "r0", Condition("clear", "day"), Condition("rain", "night"), 1)]
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'synthetic'}/images/syn_000000\.png: image is 20x16 "
                                           r"but meta.json says 24x16 \(nothing was written"):
        synthesize(_Generator(), raw, jobs, {}, tmp_path / "synthetic", batch_size=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
