"""The procedural renderer (synthdrive.render): determinism, labels, depth, occlusion,
condition looks and render options. The `procedural` collector is tested in
tests/collect/test_procedural.py."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from synthdrive import labels
from synthdrive.conditions import Condition, all_conditions
from synthdrive.render import SKY_DEPTH, render_frame
from synthdrive.render.draw import Canvas, class_ids, draw_scene
from synthdrive.render.effects import make_look
from synthdrive.render.scene import Building, Car, RenderOptions, make_scene

H, W = 64, 128
DAY, NIGHT = Condition("clear", "day"), Condition("clear", "night")
IDS = class_ids()


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(-1)


def test_same_seed_same_bytes_different_seed_differs():
    a = render_frame(3, Condition("rain", "night"), H, W)
    b = render_frame(3, Condition("rain", "night"), H, W)
    for field in ("image", "label", "depth"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), field
    assert a.instances == b.instances
    c = render_frame(4, Condition("rain", "night"), H, W)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.label, c.label)


def test_frame_types_and_label_ids_in_the_procedural_space():
    space = labels.get("procedural")
    seen = set()
    for seed in range(6):
        f = render_frame(seed, DAY, H, W)
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert f.label.shape == (H, W) and f.label.dtype == np.uint8
        assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
        assert f.label.max() < space.num_classes
        assert all(name in space.classes and n > 0 for name, n in f.instances.items())
        seen |= set(np.unique(f.label).tolist())
    for name in ("sky", "road", "lane_marking", "sidewalk", "building", "car"):
        assert IDS[name] in seen, f"no {name} pixels in 6 frames"


def test_depth_positive_sky_farthest_ground_recedes_to_horizon():
    for seed in range(4):
        f = render_frame(seed, DAY, H, W)
        assert np.isfinite(f.depth).all() and (f.depth > 0).all()
        sky = f.label == IDS["sky"]
        assert sky.any() and (f.depth[sky] == SKY_DEPTH).all()
        assert f.depth[~sky].max() < SKY_DEPTH
        road = f.label == IDS["road"]
        rows = [r for r in range(H) if road[r].sum() >= 3]
        depths = [np.median(f.depth[r][road[r]]) for r in rows]
        assert depths[0] > depths[-1] and np.all(np.diff(depths) <= 1e-3), "road depth must fall towards the bottom"


def test_facade_along_the_road_does_not_cover_a_nearer_car():
    """A facade from 5 m to 100 m is painted after a car at 20 m (painter's order by the near
    end) but lies behind it: the depth test must keep the car."""
    scene = make_scene(np.random.default_rng(0), RenderOptions())
    for name in ("backdrop", "trees", "lights", "poles", "signs", "fences", "pedestrians", "bicyclists"):
        setattr(scene, name, [])
    road = scene.road
    scene.buildings = [Building(x=road.right + 4, side=1, z0=5, z1=100, height=20, depth=10,
                                color=(150, 150, 150), floor_h=3.2, win_w=1.2, win_h=1.5, win_step=3,
                                shop=False, win_seed=0, frame_color=(200, 200, 200))]
    car = Car(x=road.right - 1.0, z=20, width=1.8, height=1.5, length=4.5, color=(200, 0, 0), facing=1)
    scene.cars = [car]
    rng = np.random.default_rng(0)
    canvas = Canvas(scene, make_look(DAY, rng), 128, 256, rng)
    drawn = draw_scene(canvas, scene, rng)
    assert drawn == {"building": 1, "car": 1}
    u = int(canvas.cx + canvas.f * car.x / car.z)
    v = int(canvas.cy + canvas.f * (canvas.cam_h - 0.45) / car.z)
    assert canvas.label[v, u] == IDS["car"]
    assert canvas.depth[v, u] == pytest.approx(car.z)
    # and the facade itself is there, with depth growing towards the vanishing point
    cols = np.where((canvas.label == IDS["building"]).any(0))[0]
    assert len(cols) > 10
    row = canvas.label.shape[0] // 3
    facade = [canvas.depth[row, c] for c in cols if canvas.label[row, c] == IDS["building"]]
    assert facade[0] > facade[-1] > 5


@pytest.mark.parametrize("condition", all_conditions(), ids=str)
def test_every_condition_renders_the_same_street(condition):
    reference = render_frame(11, DAY, H, W)
    f = render_frame(11, condition, H, W)
    assert f.image.shape == (H, W, 3)
    # the condition changes the look only: labels, depth and objects are the layout's
    assert np.array_equal(f.label, reference.label)
    assert np.array_equal(f.depth, reference.depth)
    assert f.instances == reference.instances


def test_night_darker_than_dusk_darker_than_day():
    seeds = range(6)
    mean = {t: np.mean([_gray(render_frame(s, Condition("clear", t), H, W).image).mean() for s in seeds])
            for t in ("day", "dusk", "night")}
    assert mean["night"] < 0.75 * mean["dusk"] and mean["dusk"] < 0.75 * mean["day"]


def test_fog_has_lower_contrast_than_clear_and_rain_has_a_darker_road():
    seeds = range(6)

    def contrast(weather):
        """(mean |gradient|, std of everything farther than 20 m)"""
        edges, far = [], []
        for s in seeds:
            f = render_frame(s, Condition(weather, "day"), H, W)
            g = _gray(f.image)
            edges.append(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())
            far.append(g[f.depth > 20].std())
        return np.mean(edges), np.mean(far)

    (clear_edges, clear_far), (fog_edges, fog_far) = contrast("clear"), contrast("fog")
    assert fog_edges < 0.75 * clear_edges
    assert fog_far < 0.5 * clear_far

    def road_brightness(weather):
        values = []
        for s in seeds:
            f = render_frame(s, Condition(weather, "day"), H, W)
            values.append(_gray(f.image)[f.label == IDS["road"]].mean())
        return np.mean(values)

    assert road_brightness("rain") < 0.8 * road_brightness("cloudy")


def test_render_options_change_the_street_and_are_checked():
    crowded = Counter()
    empty = Counter()
    for seed in range(5):
        crowded.update(render_frame(seed, DAY, H, W, car_density=3.0).instances)
        empty.update(render_frame(seed, DAY, H, W, car_density=0.0, pedestrian_density=0.0).instances)
    assert crowded["car"] > 0 and empty["car"] == 0 and empty["pedestrian"] == 0
    with pytest.raises(TypeError, match="car_denisty"):
        render_frame(0, DAY, H, W, car_denisty=1.0)
