"""The CARLA collector against a recording test double of the carla module (tests/fake_carla.py):
sync ticking, frame matching, weather mapping, label conversion, cleanup, unreachable server."""
from __future__ import annotations

import copy
import os
import sys
import textwrap

import numpy as np
import pytest
import yaml

from synthdrive import labels
from synthdrive.collect import carla as carla_collector
from synthdrive.collect import collect
from synthdrive.dataset import Dataset
from synthdrive.errors import UserError
from synthdrive.params import ParamError, Params
from tests import fake_carla
from tests.helpers import REPO

H, W = 12, 40
CFG = {
    "source": "carla", "height": H, "width": W, "seed": 3,
    "carla": {
        "host": "127.0.0.1", "port": 2000, "timeout": 2.0, "town": "Town10HD_Opt",
        "traffic_manager_port": 8123, "fixed_delta_seconds": 0.05, "warmup_ticks": 3,
        "save_every": 2, "sensor_timeout": 0.05, "vehicles": 3, "walkers": 2,
        "ego_blueprint": "vehicle.tesla.model3",
        "camera": {"x": 1.5, "z": 2.4, "pitch": -5.0, "fov": 90},
        "frames_per_episode": 3,
        "episodes": [
            {"weather": "ClearNoon", "split": "train"},
            {"weather": "WetCloudySunset", "split": "val", "frames": 2},
            {"weather": {"fog_density": 90, "fog_distance": 5, "sun_altitude_angle": 40},
             "condition": "fog-day", "split": "test"},
        ],
    },
}
# Every preset of the CARLA 0.9.16 client (dir(carla.WeatherParameters)), checked against it.
REAL_PRESETS = {
    "ClearNight", "ClearNoon", "ClearSunset", "CloudyNight", "CloudyNoon", "CloudySunset",
    "Default", "DustStorm", "HardRainNight", "HardRainNoon", "HardRainSunset", "MidRainSunset",
    "MidRainyNight", "MidRainyNoon", "SoftRainNight", "SoftRainNoon", "SoftRainSunset",
    "WetCloudyNight", "WetCloudyNoon", "WetCloudySunset", "WetNight", "WetNoon", "WetSunset"}


@pytest.fixture
def sim(monkeypatch):
    sim = fake_carla.Sim()
    monkeypatch.setitem(sys.modules, "carla", fake_carla.make_module(sim))
    return sim


def cfg(**carla_overrides) -> Params:
    data = copy.deepcopy(CFG)
    data["carla"].update(carla_overrides)
    return Params(data, "collect")


def expected_label(frame: int, space: str = "camvid11") -> np.ndarray:
    tags = (np.arange(W)[None, :].repeat(H, 0) + frame) % 30
    return labels.lookup("carla", space)[tags]


def check_frames_match(dataset: Dataset) -> None:
    """Image and label of every saved frame come from the frame id in its record."""
    for r in dataset.records:
        frame = r["carla_frame"]
        image = dataset.image(r["id"])
        assert (image[..., 0] == 200).all() and (image[..., 1] == 7).all()  # BGRA -> RGB
        assert (image[..., 2] == frame % 256).all(), f"{r['id']}: RGB from another frame"
        np.testing.assert_array_equal(dataset.label(r["id"]), expected_label(frame))


def assert_cleaned_up(sim) -> None:
    assert sim.actors == {}, f"actors left alive: {[a.type_id for a in sim.actors.values()]}"
    settings = [e for e in sim.log if e[0] == "apply_settings"]
    assert settings[-1] == ("apply_settings", False, None), "world settings not restored"
    assert [e for e in sim.log if e[0] == "tm_sync"][-1] == ("tm_sync", False)
    sensors = {e[2] for e in sim.log if e[0] == "spawn" and e[1].startswith("sensor.")}
    assert sensors <= {e[1] for e in sim.log if e[0] == "sensor_stop"}, "sensors not stopped"


def test_collects_in_sync_mode_and_restores_everything(sim, tmp_path):
    dataset = collect(cfg(), "camvid11", tmp_path / "raw")
    names = sim.names()
    # Protocol: sync on (with the fixed delta) and TM sync before the first tick.
    first_tick = names.index("tick")
    assert ("apply_settings", True, 0.05) in sim.log[:first_tick]
    assert ("tm_sync", True) in sim.log[:first_tick] and ("tm_seed", 3) in sim.log
    assert ("load_world", "Town10HD_Opt") in sim.log
    assert sim.ticks == sim.sync_ticks > 0
    # Ego on autopilot with the traffic manager's port; NPCs too; walker controllers started.
    ego = next(e[2] for e in sim.log if e[0] == "spawn" and e[1] == "vehicle.tesla.model3")
    assert ("set_autopilot", ego, True, 8123) in sim.log
    assert sum(1 for e in sim.log if e[0] == "set_autopilot") == 3 * (1 + 3)
    assert names.count("controller_start") == 3 * 2
    # Records: per-episode split and condition, frames every save_every ticks.
    assert [(r["split"], r["weather"], r["time_of_day"], r["carla_weather"]) for r in dataset.records] == \
        [("train", "clear", "day", "ClearNoon")] * 3 + [("val", "cloudy", "dusk", "WetCloudySunset")] * 2 + \
        [("test", "fog", "day", "custom")] * 3
    for episode in range(3):
        frames = [r["carla_frame"] for r in dataset.records if r["episode"] == episode]
        assert np.diff(frames).tolist() == [2] * (len(frames) - 1)
    assert dataset.meta["source"] == "carla" and dataset.records[0]["town"].endswith("Town10HD_Opt")
    dataset.validate()
    check_frames_match(dataset)
    # Explicit WeatherParameters reached the world for the last episode.
    assert sim.weather.fog_density == 90 and sim.weather.sun_altitude_angle == 40
    assert_cleaned_up(sim)


def test_cameras_share_transform_size_and_ego(sim, tmp_path):
    collect(cfg(episodes=[{"weather": "ClearNoon"}], frames_per_episode=1, town=None), "camvid11",
            tmp_path / "raw")
    assert "load_world" not in sim.names()  # town: null keeps the loaded map
    rgb, seg = [a for a in sim.spawned if a.type_id.startswith("sensor.")]
    assert (rgb.type_id, seg.type_id) == ("sensor.camera.rgb", "sensor.camera.semantic_segmentation")
    assert rgb.attributes == seg.attributes == {"image_size_x": str(W), "image_size_y": str(H), "fov": "90"}
    assert rgb.transform is seg.transform and rgb.parent is seg.parent
    assert rgb.parent.type_id == "vehicle.tesla.model3" and rgb.parent.attributes["role_name"] == "hero"
    loc, rot = rgb.transform.location, rgb.transform.rotation
    assert (loc.x, loc.z, rot.pitch) == (1.5, 2.4, -5.0)


def test_frames_are_matched_by_id_when_sensors_are_late_out_of_order_or_skip(sim, tmp_path):
    skipped = set()

    def seg_delivery(frame):
        # a late duplicate of the previous frame after the current one, and every 5th frame lost
        if frame % 5 == 0:
            skipped.add(frame)
            return [frame - 1]
        return [frame, frame - 1]

    sim.deliver = {"sensor.camera.rgb": lambda f: [f - 2, f - 1, f] if f % 3 else [f],
                   "sensor.camera.semantic_segmentation": seg_delivery}
    dataset = collect(cfg(save_every=1, frames_per_episode=6), "camvid11", tmp_path / "raw")
    assert len(dataset) == 6 + 2 + 6  # a lost frame is made up for on the next tick
    saved = {r["carla_frame"] for r in dataset.records}
    assert skipped and not saved & skipped
    check_frames_match(dataset)
    assert_cleaned_up(sim)


def test_sensor_queue_hands_out_by_frame_id():
    q = carla_collector.SensorQueue(timeout=0.01)
    for frame in (5, 7, 6, 4):
        q.put(type("Image", (), {"frame": frame})())
    assert q.get(6).frame == 6  # 5 dropped as stale, 7 kept for later
    assert q.get(7).frame == 7
    assert q.get(8) is None  # 4 arrived too late and is dropped; nothing for 8


def test_stalled_camera_is_an_error_and_still_cleans_up(sim, tmp_path):
    sim.deliver = {"sensor.camera.semantic_segmentation": lambda f: []}
    with pytest.raises(carla_collector.CarlaError, match="camera data stopped arriving"):
        collect(cfg(sensor_timeout=0.001), "camvid11", tmp_path / "raw")
    assert_cleaned_up(sim)
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("failure", [RuntimeError("server crashed"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
def test_cleanup_on_failure_mid_episode(sim, tmp_path, failure):
    sim.fail_at_tick, sim.fail_with = 20, failure  # during the second episode
    expected = carla_collector.CarlaError if isinstance(failure, RuntimeError) else KeyboardInterrupt
    with pytest.raises(expected):
        collect(cfg(), "camvid11", tmp_path / "raw")
    assert "controller_stop" in sim.names()
    assert_cleaned_up(sim)
    assert list(tmp_path.iterdir()) == [], "partial output left behind"


def test_unreachable_server_is_one_clear_error(sim, tmp_path):
    sim.reachable = False
    with pytest.raises(UserError) as err:
        collect(cfg(host="sim.example", port=2001, timeout=1.5), "camvid11", tmp_path / "raw")
    assert str(err.value) == ("could not reach CARLA at sim.example:2001 within 1.5s; start the "
                              "simulator or set collect.carla.host")
    assert list(tmp_path.iterdir()) == []
    assert "apply_settings" not in sim.names()


def test_unreachable_server_through_the_stage(tmp_path, workdir):
    """The collect stage prints exactly one error line and leaves no data/raw."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "carla.py").write_text(textwrap.dedent("""
        import sys
        from tests.fake_carla import Sim, make_module
        sys.modules[__name__] = make_module(Sim(reachable=False))
    """))
    proc = workdir.run("collect", {"collect": {"source": "carla", "carla": {"port": 2999, "timeout": 0.5}}},
                       check=False, env={"PYTHONPATH": f"{shim}{os.pathsep}{REPO}"}, timeout=300)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: could not reach CARLA at 127.0.0.1:2999 within 0.5s; start the "
                      "simulator or set collect.carla.host"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir.path / "data" / "raw").exists()


def test_real_client_unreachable_server(tmp_path, monkeypatch):
    """With the real carla package installed (optional extra), a closed port gives the error."""
    pytest.importorskip("carla", reason="the optional carla client is not installed")
    with pytest.raises(UserError, match=r"^could not reach CARLA at 127.0.0.1:1 within 1s; start"):
        collect(cfg(port=1, timeout=1), "camvid11", tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_missing_carla_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "carla", None)
    with pytest.raises(UserError, match=r"pip install 'carla>=0.9.14,<0.9.17'"):
        collect(cfg(), "camvid11", tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_weather_presets_map_to_conditions():
    table = carla_collector.preset_conditions()
    assert set(table) == REAL_PRESETS - {"Default"}  # Default is the map's own: no condition
    assert str(table["HardRainNight"]) == "rain-night" and str(table["WetCloudySunset"]) == "cloudy-dusk"
    assert str(table["WetNoon"]) == "clear-day" and str(table["CloudyNight"]) == "cloudy-night"
    episodes = carla_collector.episodes(Params({
        "frames_per_episode": 4,
        "episodes": [{"weather": "ClearSunset"}, {"weather": "Default", "condition": "cloudy-day"},
                     {"weather": "HardRainNoon", "condition": "fog-day", "split": "val", "frames": 1}]}))
    assert [(str(e.condition), e.split, e.frames) for e in episodes] == \
        [("clear-dusk", "train", 4), ("cloudy-day", "train", 4), ("fog-day", "val", 1)]


@pytest.mark.parametrize("entry,message", [
    ({"weather": "SunnyDay"}, "not a preset"),
    ({"weather": {"fog_density": 50}}, "need a condition"),
    ({"weather": "ClearNoon", "condition": "snow-day"}, "bad condition"),
    ({"weather": "ClearNoon", "split": "holdout"}, "split='holdout'"),
])
def test_bad_episode_params_name_the_param(entry, message):
    with pytest.raises(ParamError, match=message) as err:
        carla_collector.episodes(Params({"frames_per_episode": 1, "episodes": [entry]}))
    assert "collect.carla.episodes[0]" in str(err.value)


def test_unknown_weather_field_is_a_param_error(sim, tmp_path):
    bad = {"weather": {"fogginess": 3}, "condition": "fog-day"}
    with pytest.raises(ParamError, match="WeatherParameters"):
        collect(cfg(episodes=[bad]), "camvid11", tmp_path / "raw")
    assert_cleaned_up(sim)


def test_labels_come_from_the_red_channel_into_any_label_space(sim, tmp_path):
    dataset = collect(cfg(episodes=[{"weather": "ClearNoon"}]), "cityscapes19", tmp_path / "raw")
    for r in dataset.records:
        np.testing.assert_array_equal(dataset.label(r["id"]), expected_label(r["carla_frame"], "cityscapes19"))
    # tag 14 (car) -> cityscapes car, 24 (road_line) -> road, 0 (unlabeled) and 29 (unknown) -> ignore
    table = labels.lookup("carla", "cityscapes19")
    cs = labels.get("cityscapes19")
    assert table[14] == cs.index("car") and table[24] == cs.index("road")
    assert table[0] == labels.IGNORE and table[29] == labels.IGNORE


def test_params_yaml_has_a_valid_carla_section(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    section = Params(params["collect"]["carla"], "collect.carla")
    assert carla_collector.episodes(section)
    for key in ("host", "port", "timeout", "fixed_delta_seconds", "save_every", "vehicles",
                "walkers", "camera", "sensor_timeout", "traffic_manager_port", "warmup_ticks",
                "ego_blueprint"):
        assert key in section, key
