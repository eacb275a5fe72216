"""A seeded random street layout in world metres: x right, y up, z forward from the camera.

The layout depends only on the seed and the density options, never on the image size or the
condition, so one seed gives the same street in all twelve conditions and at every resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Albedo palettes (RGB); every draw jitters them a little.
BUILDING_COLORS = [(150, 78, 58), (172, 98, 72), (200, 186, 152), (214, 202, 172), (150, 150, 148),
                   (118, 118, 124), (226, 222, 214), (222, 200, 132), (150, 170, 190),
                   (96, 88, 86), (176, 170, 160), (190, 140, 110)]
CAR_COLORS = [(235, 235, 235), (25, 25, 28), (170, 172, 176), (110, 112, 118), (170, 25, 25),
              (30, 60, 140), (30, 80, 50), (220, 180, 30), (120, 30, 40), (200, 200, 195)]
SKIN_COLORS = [(230, 190, 160), (200, 150, 115), (150, 100, 70), (95, 65, 45), (240, 205, 180)]
GREENS = [(52, 98, 42), (70, 116, 46), (42, 82, 36), (92, 126, 56), (60, 104, 60)]


@dataclass(frozen=True)
class RenderOptions:
    """Renderer knobs (``collect.procedural.render`` in params.yaml); densities are multipliers."""
    car_density: float = 1.0
    pedestrian_density: float = 1.0
    bicyclist_density: float = 1.0
    tree_density: float = 1.0
    sign_density: float = 1.0
    building_prob: float = 0.8     # chance that a side of the street is lined with buildings
    parking_prob: float = 0.5      # chance of a parking lane with parked cars on a side
    crosswalk_prob: float = 0.35


@dataclass(frozen=True)
class Camera:
    height: float     # metres above the road
    focal: float      # focal length as a fraction of the image width
    horizon: float    # horizon row as a fraction of the image height
    shift: float      # principal point offset as a fraction of the image width


@dataclass(frozen=True)
class Road:
    left: float               # x of the left curb line
    right: float              # x of the right curb line
    centre: float             # x of the line between the two directions
    lane_w: float
    n_right: int
    n_left: int
    park_left: float          # width of a parking strip inside the curb (0: none)
    park_right: float
    curb_w: float
    walk_left: float          # sidewalk widths
    walk_right: float
    color: tuple
    walk_color: tuple
    curb_color: tuple
    centre_style: str         # dashed | solid | double_yellow
    crosswalk: float | None   # z of a zebra crossing
    patches: list             # (x0, x1, z0, z1) darker asphalt repairs


@dataclass(frozen=True)
class Building:
    x: float            # the road-facing facade plane
    side: int           # -1 left, +1 right of the road
    z0: float
    z1: float
    height: float
    depth: float
    color: tuple
    floor_h: float
    win_w: float
    win_h: float
    win_step: float
    shop: bool
    win_seed: int
    frame_color: tuple


@dataclass(frozen=True)
class Tree:
    x: float
    z: float
    trunk_h: float
    trunk_w: float
    blobs: tuple        # (dx, dy, r) crown discs relative to the trunk top
    color: tuple
    shrub: bool


@dataclass(frozen=True)
class StreetLight:
    x: float
    z: float
    height: float
    arm: float          # signed arm length towards the road


@dataclass(frozen=True)
class Pole:
    x: float
    z: float
    height: float
    width: float
    color: tuple


@dataclass(frozen=True)
class Sign:
    x: float
    z: float
    kind: str           # stop | warning | other
    variant: int
    size: float
    bottom: float       # height of the sign face's lower edge


@dataclass(frozen=True)
class Fence:
    x: float
    z0: float
    z1: float
    height: float
    post_step: float
    color: tuple


@dataclass(frozen=True)
class Car:
    x: float
    z: float            # near end
    width: float
    height: float
    length: float
    color: tuple
    facing: int         # +1 driving away (rear visible), -1 oncoming (front visible)


@dataclass(frozen=True)
class Pedestrian:
    x: float
    z: float
    height: float
    shirt: tuple
    pants: tuple
    skin: tuple
    hair: tuple
    stride: float


@dataclass(frozen=True)
class Bicyclist:
    x: float
    z: float
    shirt: tuple
    bike: tuple
    skin: tuple
    direction: int      # +1 riding away, -1 towards the camera


@dataclass(frozen=True)
class Backdrop:
    x0: float
    x1: float
    z: float
    height: float
    color: tuple
    kind: str           # building | tree


@dataclass
class Scene:
    camera: Camera
    road: Road
    grass: tuple
    sun_from: int       # -1: light comes from the left, +1 from the right
    backdrop: list = field(default_factory=list)
    buildings: list = field(default_factory=list)
    trees: list = field(default_factory=list)
    lights: list = field(default_factory=list)
    poles: list = field(default_factory=list)
    signs: list = field(default_factory=list)
    fences: list = field(default_factory=list)
    cars: list = field(default_factory=list)
    pedestrians: list = field(default_factory=list)
    bicyclists: list = field(default_factory=list)


# Generator.random() is ~30x cheaper per call than integers()/choice(); a street has hundreds
# of draws, so the helpers below build on it.
def _int(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi)."""
    return lo + int(rng.random() * (hi - lo))


def _jitter(rng: np.random.Generator, color, amount: int = 14) -> tuple:
    r = rng.random(3)
    return tuple(min(255, max(0, int(c + (2 * x - 1) * amount))) for c, x in zip(color, r))


def _pick(rng: np.random.Generator, palette, amount: int = 14) -> tuple:
    return _jitter(rng, palette[_int(rng, 0, len(palette))], amount)


def _any_color(rng: np.random.Generator) -> tuple:
    return tuple(int(20 + 215 * x) for x in rng.random(3))


def _poisson(rng: np.random.Generator, mean: float) -> int:
    return int(rng.poisson(max(mean, 0.0)))


def make_scene(rng: np.random.Generator, opt: RenderOptions) -> Scene:
    camera = Camera(height=rng.uniform(1.3, 1.75), focal=rng.uniform(0.55, 0.72),
                    horizon=rng.uniform(0.40, 0.50), shift=rng.uniform(-0.06, 0.06))
    lane_w = rng.uniform(3.0, 3.6)
    n_right, n_left = _int(rng, 1, 3), _int(rng, 1, 3)
    ego_lane = _int(rng, 0, n_right)
    centre = -(ego_lane + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
    park_left = rng.uniform(2.1, 2.5) if rng.random() < opt.parking_prob else 0.0
    park_right = rng.uniform(2.1, 2.5) if rng.random() < opt.parking_prob else 0.0
    left = centre - n_left * lane_w - park_left
    right = centre + n_right * lane_w + park_right
    grey = _int(rng, 78, 108)
    patches = []   # darker asphalt repairs
    for _ in range(_poisson(rng, 1.5)):
        x0, z0 = rng.uniform(left, right - 1.5), rng.uniform(4, 80)
        patches.append((x0, x0 + rng.uniform(0.8, 2.5), z0, z0 + rng.uniform(1.5, 8)))
    road = Road(left=left, right=right, centre=centre, lane_w=lane_w, n_right=n_right, n_left=n_left,
                park_left=park_left, park_right=park_right, curb_w=rng.uniform(0.18, 0.3),
                walk_left=rng.uniform(1.8, 4.5), walk_right=rng.uniform(1.8, 4.5),
                color=_jitter(rng, (grey, grey, grey + 4), 4),
                walk_color=_pick(rng, [(170, 164, 152), (150, 150, 148), (180, 160, 140)], 10),
                curb_color=_jitter(rng, (192, 190, 182), 8),
                centre_style=["dashed", "solid", "double_yellow"][_int(rng, 0, 3)],
                crosswalk=rng.uniform(10, 28) if rng.random() < opt.crosswalk_prob else None,
                patches=patches)
    scene = Scene(camera=camera, road=road, grass=_pick(rng, [(88, 124, 58), (100, 130, 62)], 10),
                  sun_from=-1 if rng.random() < 0.5 else 1)
    _backdrop(rng, scene)
    for side in (-1, 1):
        outer = (road.left - road.curb_w - road.walk_left) if side < 0 else (road.right + road.curb_w + road.walk_right)
        curb_x = road.left - road.curb_w if side < 0 else road.right + road.curb_w
        if rng.random() < opt.building_prob:
            _building_row(rng, scene, side, outer)
        else:
            _park(rng, scene, side, outer, opt)
        _sidewalk_things(rng, scene, side, curb_x, outer, opt)
    _street_lights(rng, scene)
    _traffic(rng, scene, opt)
    return scene


def _backdrop(rng, scene: Scene) -> None:
    x = -400.0
    while x < 400:
        width = rng.uniform(25, 90)
        z = rng.uniform(230, 320)
        if rng.random() < 0.6:
            scene.backdrop.append(Backdrop(x, x + width, z, rng.uniform(8, 55),
                                           _jitter(rng, (150, 156, 168), 16), "building"))
        else:
            scene.backdrop.append(Backdrop(x, x + width, z, rng.uniform(8, 18),
                                           _jitter(rng, (70, 100, 66), 12), "tree"))
        x += width * rng.uniform(0.6, 1.0)


def _building_row(rng, scene: Scene, side: int, outer: float) -> None:
    z = rng.uniform(-4, 6)
    while z < 170:
        length = rng.uniform(8, 28) * (1 + max(z, 0) / 50)   # far buildings: fewer, longer
        setback = rng.uniform(0, 2.5) if rng.random() < 0.5 else 0.0
        tall = rng.random() < 0.3
        height = rng.uniform(14, 40) if tall else rng.uniform(6, 16)
        floor_h = rng.uniform(2.9, 3.6)
        scene.buildings.append(Building(
            x=outer + side * setback, side=side, z0=max(z, 0.5), z1=z + length, height=height,
            depth=rng.uniform(8, 20), color=_pick(rng, BUILDING_COLORS), floor_h=floor_h,
            win_w=rng.uniform(0.9, 1.6), win_h=rng.uniform(1.2, 1.9), win_step=rng.uniform(2.4, 3.8),
            shop=bool(rng.random() < 0.5), win_seed=_int(rng, 0, 2**31),
            frame_color=_pick(rng, [(230, 228, 220), (90, 80, 75), (160, 150, 140)], 10)))
        z += length
        if rng.random() < 0.25:  # a gap between buildings, sometimes fenced
            gap = rng.uniform(3, 10)
            if rng.random() < 0.5:
                scene.fences.append(Fence(outer + side * 0.3, z, z + gap, rng.uniform(1.0, 1.8),
                                          rng.uniform(1.5, 2.5), _pick(rng, [(120, 110, 95), (60, 62, 66)], 10)))
            for _ in range(_poisson(rng, 0.8)):
                scene.trees.append(_tree(rng, outer + side * rng.uniform(2, 6), z + rng.uniform(0, gap)))
            z += gap


def _tree(rng, x: float, z: float, shrub: bool = False) -> Tree:
    """A trunk and a crown of overlapping discs (a shrub: discs on the ground)."""
    n, r = (3, rng.uniform(0.5, 1.0)) if shrub else (_int(rng, 3, 6), rng.uniform(1.3, 3.0))
    u = rng.random((n, 3))
    spread, lift, size = ((2, -1), (0.5, 0), (0.4, 0.7)) if shrub else ((1.2, -0.6), (1.0, 0.2), (0.35, 0.55))
    blobs = tuple(((a * spread[0] + spread[1]) * r, (b * lift[0] + lift[1]) * r, r * (c * size[0] + size[1]))
                  for a, b, c in u.tolist())
    green = _pick(rng, GREENS, 12)
    if shrub:
        return Tree(x, z, 0.0, 0.0, blobs, green, True)
    return Tree(x, z, rng.uniform(1.8, 3.5), rng.uniform(0.2, 0.4), blobs, green, False)


def _park(rng, scene: Scene, side: int, outer: float, opt: RenderOptions) -> None:
    if rng.random() < 0.6:
        scene.fences.append(Fence(outer + side * 0.2, 0.5, rng.uniform(60, 150), rng.uniform(0.9, 1.6),
                                  rng.uniform(1.8, 2.6), _pick(rng, [(120, 110, 95), (60, 62, 66), (200, 200, 195)], 10)))
    for _ in range(_poisson(rng, 18 * opt.tree_density)):
        scene.trees.append(_tree(rng, outer + side * rng.uniform(1.5, 30), rng.uniform(3, 130)))
    for _ in range(_poisson(rng, 8 * opt.tree_density)):
        scene.trees.append(_tree(rng, outer + side * rng.uniform(0.6, 3), rng.uniform(3, 80), shrub=True))


def _sidewalk_things(rng, scene: Scene, side: int, curb_x: float, outer: float, opt: RenderOptions) -> None:
    if rng.random() < 0.6 * min(opt.tree_density, 1.5):
        z = rng.uniform(3, 14)
        step = rng.uniform(8, 16)
        while z < 100:
            if rng.random() < 0.8:
                scene.trees.append(_tree(rng, curb_x + side * rng.uniform(0.7, 1.1), z))
            z += step
    for _ in range(_poisson(rng, 1.2 * opt.sign_density)):
        roll = rng.random()
        kind = "stop" if roll < 0.3 else "warning" if roll < 0.6 else "other"
        scene.signs.append(Sign(curb_x + side * rng.uniform(0.4, 0.9), rng.uniform(5, 60), kind,
                                _int(rng, 0, 4), rng.uniform(0.6, 0.9), rng.uniform(1.8, 2.4)))
    for _ in range(_poisson(rng, 0.8)):
        scene.poles.append(Pole(curb_x + side * rng.uniform(0.3, 0.8), rng.uniform(4, 80),
                                rng.uniform(3, 9), rng.uniform(0.12, 0.3),
                                _pick(rng, [(110, 110, 112), (120, 96, 70), (80, 84, 88)], 8)))
    lo, hi = sorted((curb_x + side * 0.5, outer - side * 0.3))
    for _ in range(_poisson(rng, 2.5 * opt.pedestrian_density)):
        scene.pedestrians.append(_pedestrian(rng, rng.uniform(lo, hi), rng.uniform(4, 60)))


def _pedestrian(rng, x: float, z: float) -> Pedestrian:
    return Pedestrian(x, z, rng.uniform(1.5, 1.9), _any_color(rng),
                      _pick(rng, [(40, 45, 70), (30, 30, 32), (110, 100, 85), (60, 80, 120)], 10),
                      _pick(rng, SKIN_COLORS, 8), _pick(rng, [(30, 22, 18), (90, 60, 30), (200, 170, 110)], 8),
                      rng.uniform(0.0, 0.18))


def _street_lights(rng, scene: Scene) -> None:
    road = scene.road
    sides = [[-1], [1], [-1, 1]][_int(rng, 0, 3)]
    for side in sides:
        x = (road.left - road.curb_w - 0.5) if side < 0 else (road.right + road.curb_w + 0.5)
        z = rng.uniform(4, 18)
        step = rng.uniform(22, 36)
        height = rng.uniform(7, 9)
        arm = -side * rng.uniform(1.2, 2.4)
        while z < 140:
            scene.lights.append(StreetLight(x, z, height, arm))
            z += step


def _traffic(rng, scene: Scene, opt: RenderOptions) -> None:
    road = scene.road
    lanes = [(road.centre + (i + 0.5) * road.lane_w, 1) for i in range(road.n_right)]
    lanes += [(road.centre - (i + 0.5) * road.lane_w, -1) for i in range(road.n_left)]
    for x, facing in lanes:
        z = rng.uniform(7, 25)
        while z < 95:
            if rng.random() < min(0.6 * opt.car_density, 0.95):
                scene.cars.append(_car(rng, x + rng.uniform(-0.3, 0.3), z, facing))
            z += rng.uniform(9, 30)
    for width, x_inner, facing in ((road.park_left, road.left, -1), (road.park_right, road.right, 1)):
        if width:
            z = rng.uniform(3, 12)
            while z < 90:
                if rng.random() < min(0.55 * opt.car_density, 0.95):
                    scene.cars.append(_car(rng, x_inner - facing * width / 2, z, facing))
                z += rng.uniform(5.5, 12)
    for _ in range(_poisson(rng, 0.8 * opt.bicyclist_density)):
        direction = 1 if rng.random() < 0.7 else -1
        x = (road.right - road.park_right - 0.9) if direction > 0 else (road.left + road.park_left + 0.9)
        scene.bicyclists.append(Bicyclist(x + rng.uniform(-0.3, 0.3), rng.uniform(5, 45),
                                          _any_color(rng),
                                          _pick(rng, [(30, 30, 30), (180, 30, 30), (30, 90, 170), (200, 200, 200)], 10),
                                          _pick(rng, SKIN_COLORS, 8), direction))
    if road.crosswalk is not None:
        for _ in range(_poisson(rng, 1.2 * opt.pedestrian_density)):
            scene.pedestrians.append(_pedestrian(rng, rng.uniform(road.left, road.right),
                                                 road.crosswalk + rng.uniform(0.5, 3.5)))


def _car(rng, x: float, z: float, facing: int) -> Car:
    big = rng.random() < 0.25
    return Car(x, z, rng.uniform(1.7, 1.95), rng.uniform(1.6, 1.85) if big else rng.uniform(1.35, 1.55),
               rng.uniform(4.0, 4.9), _pick(rng, CAR_COLORS, 10), facing)
