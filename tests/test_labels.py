import numpy as np
import pytest

from synthdrive import labels
from synthdrive.errors import UserError


def test_every_space_has_distinct_names_and_valid_colours():
    for name in labels.names():
        space = labels.get(name)
        assert len(set(space.classes)) == space.num_classes
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in space.colors)


@pytest.mark.parametrize("source", ["procedural", "carla", "cityscapes19", "camvid11"])
@pytest.mark.parametrize("target", ["camvid11", "cityscapes19"])
def test_every_source_maps_into_every_training_space(source, target):
    table = labels.lookup(source, target)
    n_src, n_dst = labels.get(source).num_classes, labels.get(target).num_classes
    mapped = table[:n_src]
    assert ((mapped < n_dst) | (mapped == labels.IGNORE)).all()
    assert (table[n_src:] == labels.IGNORE).all()


def test_camvid_cityscapes_round_trip_is_identity():
    ids = np.arange(11, dtype=np.uint8).reshape(1, -1)
    there = labels.convert(ids, "camvid11", "cityscapes19")
    assert (labels.convert(there, "cityscapes19", "camvid11") == ids).all()


def test_ignore_stays_ignore():
    assert labels.convert(np.array([255], np.uint8), "carla", "camvid11")[0] == 255


def test_procedural_signs_become_camvid_sign():
    proc = labels.get("procedural")
    table = labels.lookup("procedural", "camvid11")
    sign = labels.get("camvid11").index("sign")
    for name in ("stop_sign", "warning_sign", "traffic_sign"):
        assert table[proc.index(name)] == sign


def test_unknown_space_names_the_param():
    with pytest.raises(UserError, match="labels.space"):
        labels.get("kitti")


def test_colorize_uses_palette():
    rgb = labels.colorize(np.array([[0, 255]], np.uint8), "camvid11")
    assert tuple(rgb[0, 0]) == labels.get("camvid11").colors[0]
    assert tuple(rgb[0, 1]) == (0, 0, 0)
