"""Collect labelled frames from a running CARLA simulator (0.9.14-0.9.16) through its client.

One episode per entry of ``collect.carla.episodes``: set its weather, spawn the ego vehicle on
autopilot plus NPC vehicles and walkers, attach an RGB and a semantic-segmentation camera at the
same transform (size from collect.height/width), tick the world synchronously with a fixed
delta and save one frame every ``save_every`` ticks. Sensor data arrives on CARLA's threads;
each sensor has its own queue and frames are matched by frame id, so a late, stale or missing
image never pairs an RGB frame with another frame's labels. The semantic tag is the red channel
of the raw BGRA image; tags map into the pipeline's label space through ``synthdrive.labels``.
Whatever happens (error, Ctrl-C), actors are destroyed and the world's settings restored.
"""
from __future__ import annotations

import contextlib
import queue
import random
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from synthdrive import labels
from synthdrive.conditions import Condition
from synthdrive.dataset import SPLITS, DatasetWriter
from synthdrive.errors import UserError
from synthdrive.params import ParamError, Params

WEATHER_TABLE = Path(__file__).with_name("carla_weather.yaml")
# Save ticks in a row whose sensor data may fail to arrive before the server counts as stalled.
MAX_MISSED_SAVES = 10


class CarlaError(UserError):
    """The simulator is unreachable, misconfigured or stopped answering."""


@cache
def preset_conditions() -> dict[str, Condition]:
    """Weather preset name -> condition, from carla_weather.yaml."""
    return {name: Condition.parse(text) for name, text in yaml.safe_load(WEATHER_TABLE.read_text()).items()}


@dataclass(frozen=True)
class Episode:
    weather: str | dict[str, float]  # a preset name or explicit WeatherParameters fields
    condition: Condition
    split: str
    frames: int

    @property
    def weather_name(self) -> str:
        return self.weather if isinstance(self.weather, str) else "custom"


def episodes(cfg: Params) -> list[Episode]:
    """Validate ``collect.carla.episodes`` without touching the simulator."""
    entries = cfg["episodes"]
    if not entries:
        raise ParamError("params.yaml: collect.carla.episodes is empty; list at least one "
                         "{weather: PRESET, split: train}")
    out = []
    for n, entry in enumerate(entries):
        where = f"params.yaml: collect.carla.episodes[{n}]"
        weather, split = entry.get("weather"), entry.get("split", "train")
        if split not in SPLITS:
            raise ParamError(f"{where}: split={split!r}; choose one of {', '.join(SPLITS)}")
        if entry.get("condition"):
            try:
                condition = Condition.parse(entry["condition"])
            except ValueError as e:
                raise ParamError(f"{where}: {e}") from None
        elif isinstance(weather, str) and weather in preset_conditions():
            condition = preset_conditions()[weather]
        elif isinstance(weather, dict):
            raise ParamError(f"{where}: explicit weather parameters need a condition, "
                             f"e.g. condition: fog-day")
        else:
            raise ParamError(f"{where}: weather={weather!r} is not a preset in "
                             f"{WEATHER_TABLE.name} ({', '.join(preset_conditions())}); use one, or "
                             f"give WeatherParameters fields as a mapping plus a condition")
        frames = int(entry.get("frames", cfg["frames_per_episode"]))
        out.append(Episode(weather, condition, split, frames))
    return out


def import_carla():
    try:
        import carla
    except ImportError:
        raise UserError("collect.source=carla needs the CARLA Python client: pip install "
                        "'carla>=0.9.14,<0.9.17' (the version of your simulator; or the extra "
                        "synthdrive[carla])") from None
    return carla


def connect(carla, host: str, port: int, timeout: float):
    """A client whose server answered within ``timeout`` seconds."""
    client = carla.Client(host, int(port))
    client.set_timeout(float(timeout))
    try:
        server = client.get_server_version()
    except RuntimeError:
        raise CarlaError(f"could not reach CARLA at {host}:{port} within {timeout:g}s; start the "
                         f"simulator or set collect.carla.host") from None
    if server != client.get_client_version():
        warnings.warn(f"CARLA server {server} differs from client {client.get_client_version()}; "
                      f"install carla=={server} if frames look wrong")
    return client


def weather_parameters(carla, weather: str | dict[str, float]):
    if isinstance(weather, str):
        return getattr(carla.WeatherParameters, weather)
    try:
        return carla.WeatherParameters(**{k: float(v) for k, v in weather.items()})
    except (TypeError, ValueError) as e:  # Boost.Python rejects unknown keywords with TypeError
        raise ParamError(f"params.yaml: collect.carla.episodes weather {weather} is not valid "
                         f"carla.WeatherParameters fields ({e})") from None


class SensorQueue:
    """One sensor's data, handed out by frame id: older frames are dropped, newer kept."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue()
        self._ahead: dict[int, Any] = {}

    def put(self, data) -> None:  # the sensor callback, called on CARLA's thread
        self._queue.put(data)

    def get(self, frame: int):
        """The data of ``frame``, or None if it did not arrive within the timeout."""
        self._ahead = {f: d for f, d in self._ahead.items() if f >= frame}
        if frame in self._ahead:
            return self._ahead.pop(frame)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if data.frame == frame:
                return data
            if data.frame > frame:
                self._ahead[data.frame] = data
        return None


def bgra(image) -> np.ndarray:
    return np.frombuffer(image.raw_data, np.uint8).reshape(image.height, image.width, 4)


def rgb_of(image) -> np.ndarray:
    return np.ascontiguousarray(bgra(image)[:, :, 2::-1])


def tags_of(image) -> np.ndarray:
    """CARLA's semantic tag per pixel: the red channel of the raw (unconverted) BGRA image."""
    return np.ascontiguousarray(bgra(image)[:, :, 2])


def _destroy(carla, client, actors: list) -> None:
    """Stop sensors and walker controllers, then destroy everything in one batch (and tick)."""
    for actor in actors:
        with contextlib.suppress(Exception):
            if actor.type_id.startswith("sensor."):
                actor.stop()
            elif actor.type_id == "controller.ai.walker":
                actor.stop()
    try:
        client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in reversed(actors)], True)
    except Exception as e:
        warnings.warn(f"CARLA: could not destroy {len(actors)} actors ({e}); restart the "
                      f"simulator if leftovers get in the way")


class Session:
    """The world in synchronous mode for the collection; restores its settings on exit."""

    def __init__(self, carla, client, cfg: Params, seed: int):
        self.carla, self.client, self.cfg, self.seed = carla, client, cfg, seed
        try:
            self.world = client.load_world(cfg["town"]) if cfg.get("town") else client.get_world()
        except RuntimeError as e:
            raise CarlaError(f"CARLA could not load collect.carla.town={cfg.get('town')!r} ({e}); "
                             f"pick one of {client.get_available_maps()} or null") from None
        self.town = self.world.get_map().name
        self.original = self.world.get_settings()
        self.tm = client.get_trafficmanager(int(cfg["traffic_manager_port"]))

    def __enter__(self) -> "Session":
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = float(self.cfg["fixed_delta_seconds"])
        try:
            self.world.apply_settings(settings)
            self.tm.set_synchronous_mode(True)
            self.tm.set_random_device_seed(self.seed)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for undo in (lambda: self.tm.set_synchronous_mode(False),
                     lambda: self.world.apply_settings(self.original)):
            try:
                undo()
            except Exception as e:
                warnings.warn(f"CARLA: could not restore the world settings ({e}); restart the "
                              f"simulator before using it in asynchronous mode")

    def tick(self) -> int:
        try:
            return self.world.tick()
        except RuntimeError as e:
            raise CarlaError(f"CARLA stopped answering during a tick ({e}); check the simulator "
                             f"or raise collect.carla.timeout") from None

    @contextlib.contextmanager
    def actors(self, index: int, height: int, width: int):
        """Spawn ego, NPCs, walkers and the two cameras; yield (rgb queue, seg queue)."""
        carla, world, cfg, cmd = self.carla, self.world, self.cfg, self.carla.command
        rng = random.Random(self.seed * 1000 + index)
        spawned: list = []
        try:
            library = world.get_blueprint_library()
            points = list(world.get_map().get_spawn_points())
            rng.shuffle(points)
            try:
                ego_bp = library.find(cfg["ego_blueprint"])
            except (IndexError, RuntimeError):
                raise ParamError(f"params.yaml: collect.carla.ego_blueprint="
                                 f"{cfg['ego_blueprint']!r} is not in this CARLA's blueprint "
                                 f"library; pick a vehicle.* id") from None
            ego_bp.set_attribute("role_name", "hero")
            ego = next((a for p in points if (a := world.try_spawn_actor(ego_bp, p))), None)
            if ego is None:
                raise CarlaError(f"CARLA map {self.town}: no free spawn point for the ego vehicle")
            spawned.append(ego)
            port = self.tm.get_port()
            ego.set_autopilot(True, port)

            vehicles = library.filter("vehicle.*")
            batch = [cmd.SpawnActor(rng.choice(vehicles), p).then(
                cmd.SetAutopilot(cmd.FutureActor, True, port))
                for p in points[1: 1 + int(cfg["vehicles"])]]
            spawned += self._spawn_batch(batch)

            world.set_pedestrians_seed(self.seed * 1000 + index)
            walker_bps = library.filter("walker.pedestrian.*")
            places = [world.get_random_location_from_navigation() for _ in range(int(cfg["walkers"]))]
            batch = [cmd.SpawnActor(rng.choice(walker_bps), carla.Transform(place))
                     for place in places if place is not None]  # None: the map has no navmesh
            walkers = self._spawn_batch(batch)
            spawned += walkers
            ai = library.find("controller.ai.walker")
            controllers = self._spawn_batch([cmd.SpawnActor(ai, carla.Transform(), w.id)
                                             for w in walkers])
            spawned += controllers
            self.tick()  # controllers need one tick before they can start
            for controller in controllers:
                controller.start()
                controller.go_to_location(world.get_random_location_from_navigation())
                controller.set_max_speed(1.0 + rng.random())

            cam = cfg["camera"]
            transform = carla.Transform(carla.Location(x=float(cam["x"]), z=float(cam["z"])),
                                        carla.Rotation(pitch=float(cam["pitch"])))
            queues = []
            for blueprint in ("sensor.camera.rgb", "sensor.camera.semantic_segmentation"):
                bp = library.find(blueprint)
                bp.set_attribute("image_size_x", str(width))
                bp.set_attribute("image_size_y", str(height))
                bp.set_attribute("fov", str(cam["fov"]))
                sensor = world.spawn_actor(bp, transform, attach_to=ego)
                spawned.append(sensor)
                sensor_queue = SensorQueue(float(cfg["sensor_timeout"]))
                sensor.listen(sensor_queue.put)
                queues.append(sensor_queue)
            yield tuple(queues)
        finally:
            _destroy(carla, self.client, spawned)

    def _spawn_batch(self, batch: list) -> list:
        """Spawn in one round trip; a spawn refused for a collision is skipped, not fatal."""
        if not batch:
            return []
        ids = [r.actor_id for r in self.client.apply_batch_sync(batch, True) if not r.error]
        return list(self.world.get_actors(ids)) if ids else []


def run_episode(session: Session, queues, episode: Episode, index: int, writer: DatasetWriter,
                table: np.ndarray, cfg: Params) -> None:
    rgb_queue, seg_queue = queues
    for _ in range(int(cfg["warmup_ticks"])):
        session.tick()
    save_every, saved, since_save, missed = int(cfg["save_every"]), 0, 0, 0
    with tqdm(total=episode.frames, desc=f"carla episode {index} ({episode.weather_name})",
              unit="frame") as bar:
        while saved < episode.frames:
            frame = session.tick()
            since_save += 1
            if since_save < save_every:
                continue
            rgb, seg = rgb_queue.get(frame), seg_queue.get(frame)
            if rgb is None or seg is None:  # try again on the next tick
                missed += 1
                if missed > MAX_MISSED_SAVES:
                    raise CarlaError(f"CARLA: camera data stopped arriving ({missed} frames in a "
                                     f"row missing); check the simulator or raise "
                                     f"collect.carla.sensor_timeout")
                continue
            missed, since_save = 0, 0
            writer.add({"id": f"{episode.split}_carla{index:02d}_{frame:08d}",
                        "split": episode.split, "weather": episode.condition.weather,
                        "time_of_day": episode.condition.time_of_day, "source": "carla",
                        "episode": index, "carla_frame": frame, "town": session.town,
                        "carla_weather": episode.weather_name},
                       rgb_of(rgb), table[tags_of(seg)])
            saved += 1
            bar.update()


def collect(cfg: Params, writer: DatasetWriter, label_space: str) -> None:
    c = cfg["carla"]
    plan = episodes(c)
    table = labels.lookup("carla", label_space)
    carla = import_carla()
    client = connect(carla, c["host"], c["port"], c["timeout"])
    seed = int(cfg["seed"])
    with Session(carla, client, c, seed) as session:
        for index, episode in enumerate(plan):
            session.world.set_weather(weather_parameters(carla, episode.weather))
            with session.actors(index, int(cfg["height"]), int(cfg["width"])) as queues:
                run_episode(session, queues, episode, index, writer, table, c)
