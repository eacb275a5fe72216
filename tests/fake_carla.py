"""A stand-in for the ``carla`` client module (tests only): same names and call shapes as
CARLA 0.9.14-0.9.16 for what synthdrive uses, an in-memory "simulator" behind them, and a log
of every call so tests can check the protocol. ``make_module(sim)`` builds the module; inject
it with ``monkeypatch.setitem(sys.modules, "carla", module)``.

Cameras encode their frame id in the pixels (RGB blue channel = frame % 256; semantic tags =
(column + frame) % 30 in the red channel, junk in the others), so a test can tell which frame a
saved image and label came from. ``sim.deliver[sensor type](frame)`` decides which frames a
sensor hands to its callback on each tick: late, duplicated, out of order or never.
"""
from __future__ import annotations

import fnmatch
import types
from dataclasses import dataclass, field

import numpy as np

VERSION = "0.9.15"
WEATHER_FIELDS = ("cloudiness", "precipitation", "precipitation_deposits", "wind_intensity",
                  "sun_azimuth_angle", "sun_altitude_angle", "fog_density", "fog_distance",
                  "fog_falloff", "wetness", "scattering_intensity", "mie_scattering_scale",
                  "rayleigh_scattering_scale", "dust_storm")
PRESETS = {"ClearNoon": dict(cloudiness=5, sun_altitude_angle=45),
           "WetCloudySunset": dict(cloudiness=60, precipitation_deposits=50, sun_altitude_angle=15),
           "HardRainNight": dict(cloudiness=100, precipitation=100, sun_altitude_angle=-90),
           "Default": dict(cloudiness=-1)}


@dataclass
class Sim:
    """The simulated server: its state, its knobs and the call log."""
    reachable: bool = True
    frame: int = 1000
    fail_at_tick: int | None = None          # raise fail_with at this tick (once)
    fail_with: BaseException = RuntimeError("simulated server crash")
    deliver: dict = field(default_factory=dict)  # sensor type -> fn(frame) -> frames to send now
    log: list = field(default_factory=list)
    actors: dict = field(default_factory=dict)   # id -> alive actor
    spawned: list = field(default_factory=list)  # every actor ever spawned
    next_id: int = 100
    ticks: int = 0
    sync_ticks: int = 0                       # ticks made while the world was synchronous
    weather: object = None

    def call(self, *entry) -> None:
        self.log.append(entry)

    def names(self) -> list[str]:
        return [e[0] for e in self.log]


def make_module(sim: Sim) -> types.ModuleType:
    carla = types.ModuleType("carla")

    class Location:
        def __init__(self, x=0.0, y=0.0, z=0.0):
            self.x, self.y, self.z = x, y, z

    class Rotation:
        def __init__(self, pitch=0.0, yaw=0.0, roll=0.0):
            self.pitch, self.yaw, self.roll = pitch, yaw, roll

    class Transform:
        def __init__(self, location=None, rotation=None):
            self.location, self.rotation = location or Location(), rotation or Rotation()

    class WeatherParameters:
        def __init__(self, **kwargs):
            unknown = set(kwargs) - set(WEATHER_FIELDS)
            if unknown:  # Boost.Python's message for a bad keyword
                raise TypeError(f"Python argument types did not match C++ signature: {unknown}")
            for name in WEATHER_FIELDS:
                setattr(self, name, float(kwargs.get(name, 0.0)))

    for preset, values in PRESETS.items():
        setattr(WeatherParameters, preset, WeatherParameters(**values))

    class WorldSettings:
        def __init__(self, synchronous_mode=False, fixed_delta_seconds=None, no_rendering_mode=False):
            self.synchronous_mode = synchronous_mode
            self.fixed_delta_seconds = fixed_delta_seconds
            self.no_rendering_mode = no_rendering_mode

        def copy(self):
            return WorldSettings(self.synchronous_mode, self.fixed_delta_seconds, self.no_rendering_mode)

    class ActorBlueprint:
        def __init__(self, type_id):
            self.id, self.attributes = type_id, {}

        def set_attribute(self, key, value):
            if not isinstance(value, str):
                raise TypeError("set_attribute takes a string value")
            self.attributes[key] = value

    class BlueprintLibrary:
        IDS = ("vehicle.tesla.model3", "vehicle.audi.a2", "vehicle.bh.crossbike",
               "walker.pedestrian.0001", "walker.pedestrian.0002", "controller.ai.walker",
               "sensor.camera.rgb", "sensor.camera.semantic_segmentation")

        def find(self, type_id):
            if type_id not in self.IDS:
                raise IndexError(f"blueprint {type_id!r} not found")
            return ActorBlueprint(type_id)

        def filter(self, pattern):
            return [ActorBlueprint(i) for i in self.IDS if fnmatch.fnmatch(i, pattern)]

    class Actor:
        def __init__(self, blueprint, transform, parent=None):
            self.id, sim.next_id = sim.next_id, sim.next_id + 1
            self.type_id, self.attributes = blueprint.id, dict(blueprint.attributes)
            self.transform, self.parent = transform, parent
            sim.actors[self.id] = self
            sim.spawned.append(self)
            sim.call("spawn", self.type_id, self.id)

        def destroy(self):
            sim.call("destroy", self.id)
            return sim.actors.pop(self.id, None) is not None

        def set_autopilot(self, enabled=True, port=8000):
            sim.call("set_autopilot", self.id, enabled, port)

    class Sensor(Actor):
        callback = None

        def listen(self, callback):
            sim.call("listen", self.type_id)
            self.callback = callback

        def stop(self):
            sim.call("sensor_stop", self.id)
            self.callback = None

        def emit(self, frame):
            h, w = int(self.attributes["image_size_y"]), int(self.attributes["image_size_x"])
            raw = np.zeros((h, w, 4), np.uint8)
            raw[..., 3] = 255
            if self.type_id == "sensor.camera.rgb":
                raw[..., 0], raw[..., 1], raw[..., 2] = frame % 256, 7, 200  # B, G, R
            else:
                raw[..., 2] = (np.arange(w)[None, :] + frame) % 30  # tag in red; 29 is unknown
                raw[..., 0], raw[..., 1] = 99, frame % 256         # junk that must be ignored
            self.callback(types.SimpleNamespace(frame=frame, width=w, height=h, raw_data=raw.tobytes()))

    class WalkerAIController(Actor):
        def start(self):
            sim.call("controller_start", self.id)

        def stop(self):
            sim.call("controller_stop", self.id)

        def go_to_location(self, location):
            sim.call("go_to_location", self.id)

        def set_max_speed(self, speed):
            sim.call("set_max_speed", self.id)

    def make_actor(blueprint, transform, parent=None):
        kind = Sensor if blueprint.id.startswith("sensor.") else \
            WalkerAIController if blueprint.id == "controller.ai.walker" else Actor
        return kind(blueprint, transform, parent)

    class Map:
        name = "Carla/Maps/Town10HD_Opt"

        def get_spawn_points(self):
            return [Transform(Location(x=float(i))) for i in range(8)]

    class World:
        def __init__(self):
            self.settings = WorldSettings(fixed_delta_seconds=None)

        def get_settings(self):
            return self.settings.copy()

        def apply_settings(self, settings):
            sim.call("apply_settings", settings.synchronous_mode, settings.fixed_delta_seconds)
            self.settings = settings.copy()
            return sim.frame

        def tick(self, seconds=10.0):
            sim.ticks += 1
            if sim.ticks == sim.fail_at_tick:
                raise sim.fail_with
            if not self.settings.synchronous_mode:
                raise AssertionError("tick() called while the world is asynchronous")
            sim.sync_ticks += 1
            sim.frame += 1
            sim.call("tick", sim.frame)
            for actor in list(sim.actors.values()):
                if isinstance(actor, Sensor) and actor.callback:
                    for f in sim.deliver.get(actor.type_id, lambda f: [f])(sim.frame):
                        actor.emit(f)
            return sim.frame

        def get_blueprint_library(self):
            return BlueprintLibrary()

        def get_map(self):
            return Map()

        def try_spawn_actor(self, blueprint, transform, attach_to=None):
            return make_actor(blueprint, transform, attach_to)

        def spawn_actor(self, blueprint, transform, attach_to=None):
            return make_actor(blueprint, transform, attach_to)

        def set_weather(self, weather):
            sim.call("set_weather", weather)
            sim.weather = weather

        def get_random_location_from_navigation(self):
            return Location(1.0, 2.0, 0.0)

        def set_pedestrians_seed(self, seed):
            sim.call("set_pedestrians_seed", seed)

        def get_actors(self, ids=None):
            return [sim.actors[i] for i in ids]

    class TrafficManager:
        def __init__(self, port):
            self.port = port

        def set_synchronous_mode(self, on):
            sim.call("tm_sync", on)

        def set_random_device_seed(self, seed):
            sim.call("tm_seed", seed)

        def get_port(self):
            return self.port

    command = types.SimpleNamespace(FutureActor=object())

    class SpawnActor:
        def __init__(self, blueprint, transform, parent=None):
            self.blueprint, self.transform, self.parent, self.next = blueprint, transform, parent, None

        def then(self, next_command):
            self.next = next_command
            return self

    class SetAutopilot:
        def __init__(self, actor, enabled, port=8000):
            self.actor, self.enabled, self.port = actor, enabled, port

    class DestroyActor:
        def __init__(self, actor):
            self.actor_id = actor if isinstance(actor, int) else actor.id

    command.SpawnActor, command.SetAutopilot, command.DestroyActor = SpawnActor, SetAutopilot, DestroyActor

    class Client:
        def __init__(self, host, port, worker_threads=0):
            sim.call("client", host, port)
            self.host, self.port, self.timeout = host, port, None
            self.world = World()

        def set_timeout(self, seconds):
            self.timeout = seconds

        def _check(self):
            if not sim.reachable:
                raise RuntimeError(f"time-out of {int(self.timeout * 1000)}ms while waiting for the "
                                   f"simulator, make sure the simulator is ready and connected "
                                   f"to {self.host}:{self.port}")

        def get_server_version(self):
            self._check()
            return VERSION

        def get_client_version(self):
            return VERSION

        def get_world(self):
            self._check()
            return self.world

        def load_world(self, town):
            self._check()
            sim.call("load_world", town)
            return self.world

        def get_available_maps(self):
            return ["/Game/Carla/Maps/Town10HD_Opt"]

        def get_trafficmanager(self, port=8000):
            return TrafficManager(port)

        def apply_batch_sync(self, commands, do_tick=False):
            responses = []
            for c in commands:
                if isinstance(c, DestroyActor):
                    ok = c.actor_id in sim.actors
                    sim.actors.pop(c.actor_id, None)
                    sim.call("destroy", c.actor_id)
                    responses.append(types.SimpleNamespace(error="" if ok else "not found",
                                                           actor_id=c.actor_id))
                else:
                    parent = sim.actors.get(c.parent) if c.parent is not None else None
                    actor = make_actor(c.blueprint, c.transform, parent)
                    if isinstance(c.next, SetAutopilot):
                        actor.set_autopilot(c.next.enabled, c.next.port)
                    responses.append(types.SimpleNamespace(error="", actor_id=actor.id))
            if do_tick:
                self.world.tick()
            return responses

    for name, value in dict(Location=Location, Rotation=Rotation, Transform=Transform,
                            WeatherParameters=WeatherParameters, WorldSettings=WorldSettings,
                            Client=Client, command=command).items():
        setattr(carla, name, value)
    return carla
