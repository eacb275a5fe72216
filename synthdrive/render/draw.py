"""Draw a street layout into image, label and depth together, far to near.

Shapes are world-space polygons projected by a pinhole camera and filled by OpenCV (1/16 px
fixed point). Three kinds:
  ground decals   road, sidewalks, markings: colour and label only (the base layer holds the
                  ground's depth)
  fronto-parallel car backs, people, trees, signs: constant depth, painted straight into the
                  three buffers in painter's order (far to near), so a nearer one covers it
  along the road  facades, fences, car and bicycle sides on a plane x = const: depth varies per
                  column, so they also pass a per-pixel depth test. Painter's order alone gets
                  these wrong: a facade from 10 m to 60 m is painted after a car at 20 m but lies
                  behind it where they overlap.
"""
from __future__ import annotations

from collections import Counter
from functools import cache

import cv2
import numpy as np

from synthdrive import labels
from synthdrive.render.effects import Look, sky_rows
from synthdrive.render.scene import (Backdrop, Bicyclist, Building, Car, Fence, Pedestrian, Pole,
                                     Scene, Sign, StreetLight, Tree)

SKY_DEPTH = 1000.0      # metres written for sky pixels: farther than anything else
GROUND_MAX = 900.0      # ground depth near the horizon is capped below the sky's
NEAR = 0.5              # nothing is drawn nearer than this (metres)
FAR = 400.0             # the road and sidewalks end here
FIX = 16.0              # OpenCV fixed point: coordinates in 1/16 px (shift=4)


def _ring(n: int) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], 1)


CIRCLE = _ring(12)
CIRCLE16 = _ring(16)
OCTAGON = _ring(8) @ np.array([[np.cos(np.pi / 8), np.sin(np.pi / 8)], [-np.sin(np.pi / 8), np.cos(np.pi / 8)]])
HALF_DISC = CIRCLE[:7]   # the upper half: hair, helmets


@cache
def class_ids() -> dict[str, int]:
    space = labels.get("procedural")
    return {name: space.index(name) for name in space.classes}


def _rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float64)


def _circle(x: float, y: float, r: float, template: np.ndarray = CIRCLE) -> np.ndarray:
    return template * r + (x, y)


class Canvas:
    """Image, label and depth buffers plus the camera that projects into them."""

    def __init__(self, scene: Scene, look: Look, height: int, width: int, rng: np.random.Generator):
        cam = scene.camera
        self.h, self.w = height, width
        self.f = cam.focal * width
        self.cx = width * (0.5 + cam.shift)
        self.cy = height * cam.horizon
        self.cam_h = cam.height
        self.look = look
        self._lit: dict = {}
        self.ids = class_ids()
        self.glows: list = []
        self.pools: list = []
        self.image = np.empty((height, width, 3), np.uint8)
        self.label = np.empty((height, width), np.uint8)
        self.depth = np.empty((height, width), np.float32)
        horizon_row = min(max(int(np.floor(self.cy)) + 1, 0), height)
        self.image[:horizon_row] = sky_rows(look, horizon_row, width, rng)
        self.label[:horizon_row] = self.ids["sky"]
        self.depth[:horizon_row] = SKY_DEPTH
        rows = np.arange(horizon_row, height, dtype=np.float32) - np.float32(self.cy)
        self.depth[horizon_row:] = np.minimum(self.f * self.cam_h / np.maximum(rows, 1e-3), GROUND_MAX)[:, None]
        self.image[horizon_row:] = self.lit(scene.grass)
        self.label[horizon_row:] = self.ids["grass"]

    def pool(self, polygon: np.ndarray, strength: float, color=(1.0, 0.86, 0.62)) -> None:
        """Ground lit by a lamp or headlights: post multiplies the image there by 1 + gain, per
        channel ``strength * color / ambient`` (the image is albedo * ambient, so this adds
        albedo * strength * color: warm light on a blue night)."""
        if self.look.lamp_gain:
            gain = tuple(self.look.lamp_gain * strength * k / max(a, 0.02) for k, a in zip(color, self.look.ambient))
            self.pools.append((polygon, gain))

    # -- colours ---------------------------------------------------------------------------
    def lit(self, color, shade: float = 1.0) -> tuple:
        """Albedo under the condition's light (desaturated by overcast, scaled by shading)."""
        key = (color, shade)
        if key not in self._lit:
            self._lit[key] = self._light(color, shade)
        return self._lit[key]

    def _light(self, color, shade: float) -> tuple:
        a, d = self.look.ambient, self.look.desat
        m = (color[0] + color[1] + color[2]) / 3
        return (min(255, int((color[0] + (m - color[0]) * d) * a[0] * shade)),
                min(255, int((color[1] + (m - color[1]) * d) * a[1] * shade)),
                min(255, int((color[2] + (m - color[2]) * d) * a[2] * shade)))

    def glass(self, shade: float = 1.0) -> tuple:
        """Window glass: dark, reflecting the sky near the horizon."""
        dark = self.lit((46, 56, 70), shade)
        return tuple(int(0.55 * a + 0.27 * b) for a, b in zip(dark, self.look.sky_horizon))

    # -- projection to 1/16 px fixed point ------------------------------------------------------
    def fronto(self, x: float, z: float, pts) -> np.ndarray:
        """Local (x, y) metres on the upright plane at depth z, shifted by x."""
        s = FIX * self.f / z
        return (np.asarray(pts, np.float64) * (s, -s) + (FIX * self.cx + s * x, FIX * self.cy + s * self.cam_h)).astype(np.int32)

    def plane(self, x: float, pts) -> np.ndarray:
        """(z, y) metres on the vertical plane at lateral position x."""
        pts = np.asarray(pts, np.float64)
        k = FIX * self.f / np.maximum(pts[..., 0], NEAR)
        return np.stack([FIX * self.cx + k * x, FIX * self.cy + k * (self.cam_h - pts[..., 1])], -1).astype(np.int32)

    def ground(self, pts) -> np.ndarray:
        """(x, z) metres on the road plane."""
        pts = np.asarray(pts, np.float64)
        k = FIX * self.f / np.maximum(pts[..., 1], NEAR)
        return np.stack([FIX * self.cx + k * pts[..., 0], FIX * self.cy + k * self.cam_h], -1).astype(np.int32)

    def size_px(self, metres: float, z: float) -> float:
        return self.f * metres / z

    # -- filling ---------------------------------------------------------------------------
    def visible(self, poly: np.ndarray) -> bool:
        """Whether a fixed-point polygon covers part of the frame (at least about a pixel)."""
        x, y, w, h = cv2.boundingRect(poly.reshape(-1, 2) // 16)
        return x < self.w and y < self.h and x + w > 0 and y + h > 0 and max(w, h) >= 1

    def paint(self, polys, color, cls: str | None = None, z: float | None = None) -> None:
        """Fill polygons straight into the buffers: painter's order does the occlusion.

        ``z`` is the constant depth of a fronto-parallel shape; ground decals leave it None.
        Details inside an already painted outline of the same class (windows, sign faces)
        leave ``cls`` None too: only their colour changes.

        ``polys``: a list is filled polygon by polygon (their union); a (K, N, 2) array in one
        OpenCV call, which is faster but XORs overlaps (a ring = outer + inner contour), so
        batches must not overlap.
        """
        if not isinstance(polys, np.ndarray):   # see _fill
            for poly in polys:
                self.paint(poly[None], color, cls, z)
            return
        cv2.fillPoly(self.image, polys, color, cv2.LINE_8, 4)
        if cls is not None:
            cv2.fillPoly(self.label, polys, self.ids[cls], cv2.LINE_8, 4)
        if z is not None and cls is not None:
            cv2.fillPoly(self.depth, polys, float(z), cv2.LINE_8, 4)

    def paint_plane(self, x: float, layers: list, cls: str) -> bool:
        """Paint ``[(polygons, colour), ...]`` lying on the vertical plane at lateral position x,
        later layers over earlier ones (a facade, then its windows), where the plane is nearest.

        One patch and one depth test per call: the layers are rasterised into a local colour
        patch and coverage mask, then copied where the plane wins (cv2.copyTo: numpy's masked
        copies are ~20x slower on these patches).
        """
        pts = [p.reshape(-1, 2) for polys, _ in layers for p in (polys if isinstance(polys, list) else [polys])]
        pts = np.concatenate(pts)
        x0, y0 = (pts.min(0) >> 4).tolist()
        x1, y1 = ((pts.max(0) >> 4) + 2).tolist()
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        if x0 >= x1 or y0 >= y1:
            return False
        shape = (y1 - y0, x1 - x0)
        covered = np.zeros(shape, np.uint8)
        colour = np.empty((*shape, 3), np.uint8)
        offset = (-16 * x0, -16 * y0)
        for polys, color in layers:   # list: union; array: one call (see paint)
            for batch in ([polys] if isinstance(polys, np.ndarray) else [p[None] for p in polys]):
                cv2.fillPoly(covered, batch, 1, cv2.LINE_8, 4, offset)
                cv2.fillPoly(colour, batch, color, cv2.LINE_8, 4, offset)
        sl = (slice(y0, y1), slice(x0, x1))
        du = np.arange(x0, x1, dtype=np.float32) - np.float32(self.cx)
        with np.errstate(divide="ignore"):
            zc = np.float32(self.f * x) / du
        zc = np.where(zc > NEAR, zc, np.float32(1e4))[None, :]
        depth = self.depth[sl]
        win = zc <= depth
        win &= covered.view(bool)
        if not win.any():
            return False
        mask = win.view(np.uint8)
        cv2.copyTo(cv2.repeat(zc, shape[0], 1), mask, depth)
        cv2.copyTo(colour, mask, self.image[sl])
        cv2.copyTo(np.full(shape, self.ids[cls], np.uint8), mask, self.label[sl])
        return True

    def glow(self, x: float, y: float, z: float, radius_m: float, color, strength: float) -> None:
        """Record a light source; it glows in post only if nothing nearer hides its centre."""
        u = self.cx + self.f * x / z
        v = self.cy + self.f * (self.cam_h - y) / z
        if 0 <= u < self.w and 0 <= v < self.h and self.depth[int(v), int(u)] >= z - 0.3:
            mirror = self.cy + self.f * (self.cam_h + y) / z
            self.glows.append((u, v, min(max(self.f * radius_m / z, 1.5), 0.025 * self.w), color, strength, mirror))


# -- the street ------------------------------------------------------------------------------
def draw_ground(c: Canvas, scene: Scene) -> None:
    road, look = scene.road, c.look

    def quad(x0, x1, z0, z1):
        return c.ground([(x0, z0), (x1, z0), (x1, z1), (x0, z1)])

    wl, wr = road.left - road.curb_w, road.right + road.curb_w
    walk = c.lit(road.walk_color)
    c.paint([quad(wl - road.walk_left, wl, NEAR, FAR), quad(wr, wr + road.walk_right, NEAR, FAR)], walk, "sidewalk")
    joints = np.arange(1.0, 60, 1.8)[:, None] + [0.0, 0.0, 0.08, 0.08]
    for x0, x1 in ((wl - road.walk_left, wl), (wr, wr + road.walk_right)):
        c.paint(c.ground(np.stack([np.broadcast_to([x0, x1, x1, x0], joints.shape), joints], -1)),
                c.lit(road.walk_color, 0.82))
    for b in scene.buildings:  # paved strip between the sidewalk and a set-back facade
        outer = wl - road.walk_left if b.side < 0 else wr + road.walk_right
        if abs(b.x - outer) > 0.05:
            c.paint([quad(min(outer, b.x), max(outer, b.x), b.z0, b.z1)], walk, "sidewalk")
    c.paint([quad(wl, road.left, NEAR, FAR), quad(road.right, wr, NEAR, FAR)], c.lit(road.curb_color), "curb")
    wet = 0.5 if look.wet else 1.0
    c.paint([quad(road.left, road.right, NEAR, FAR)], c.lit(road.color, wet), "road")
    c.paint([c.plane(x, [(NEAR, 0.0), (FAR, 0.0), (FAR, 0.15), (NEAR, 0.15)]) for x in (road.left, road.right)],
            c.lit(road.curb_color, 0.8), "curb")   # the curbs' faces towards the road
    if road.patches:
        c.paint([quad(x0, x1, z0, z1) for x0, x1, z0, z1 in road.patches], c.lit(road.color, 0.82 * wet))
    lw = 0.14
    inner_l, inner_r = road.left + road.park_left, road.right - road.park_right
    marks = [quad(inner_l + 0.15, inner_l + 0.15 + lw, NEAR, FAR), quad(inner_r - 0.15 - lw, inner_r - 0.15, NEAR, FAR)]
    dash_z = np.arange(-2.0, 160, 9.0)
    dash_x = [road.centre + i * road.lane_w for i in range(1, road.n_right)]
    dash_x += [road.centre - i * road.lane_w for i in range(1, road.n_left)]
    if road.centre_style == "dashed":
        dash_x.append(road.centre)
    elif road.centre_style == "solid":
        marks.append(quad(road.centre - lw / 2, road.centre + lw / 2, NEAR, FAR))
    else:
        x = road.centre
        c.paint([quad(x - 0.2, x - 0.2 + lw, NEAR, FAR), quad(x + 0.2 - lw, x + 0.2, NEAR, FAR)],
                c.lit((226, 184, 40)), "lane_marking")
    for x in dash_x:
        zs = dash_z[:, None] + [0.0, 0.0, 3.0, 3.0]
        marks += list(c.ground(np.stack([np.broadcast_to([x - lw / 2, x + lw / 2, x + lw / 2, x - lw / 2], zs.shape), zs], -1)))
    if road.crosswalk is not None:
        z = road.crosswalk
        marks += [quad(xs, xs + 0.5, z, z + 4.0) for xs in np.arange(inner_l + 0.3, inner_r - 0.5, 1.0)]
        marks.append(quad(inner_l, inner_r, z - 1.0, z - 0.6))
    c.paint(np.stack(marks), c.lit((232, 232, 226), 0.9 if look.wet else 1.0), "lane_marking")
    _shadows(c, scene)


def _shadows(c: Canvas, scene: Scene) -> None:
    """Darken the ground under cars (always) and in cast shadows (clear day and dusk)."""
    # contact shadows: the road under a car, darker (no need to read back the ground)
    under = c.lit(scene.road.color, 0.45 * (0.5 if c.look.wet else 1.0))
    for k in scene.cars:
        c.paint(c.ground([(k.x - k.width / 2, k.z - 0.1), (k.x + k.width / 2, k.z - 0.1),
                          (k.x + k.width / 2, k.z + k.length), (k.x - k.width / 2, k.z + k.length)])[None], under)
    if c.look.shadow is not None:
        shade = np.zeros((c.h, c.w), np.uint8)  # 1 where a cast shadow falls
        dx, dz, k = c.look.shadow
        dx *= -scene.sun_from  # shadows fall away from the sun
        polys = [c.ground([(b.x, b.z0), (b.x, b.z1), (b.x + dx * b.height, b.z1 + dz * b.height),
                           (b.x + dx * b.height, b.z0 + dz * b.height)])
                 for b in scene.buildings if b.side == scene.sun_from]
        for t in scene.trees:
            top = t.trunk_h + max(b[1] for b in t.blobs)
            if not t.shrub and t.z + dz * top > 6:
                polys.append(c.ground(_circle(t.x + dx * top, t.z + dz * top, 0.9 * max(b[2] for b in t.blobs))))
        for s in scene.lights:
            polys.append(c.ground([(s.x, s.z), (s.x + 0.15, s.z), (s.x + dx * s.height + 0.15, s.z + dz * s.height),
                                   (s.x + dx * s.height, s.z + dz * s.height)]))
        for poly in polys:   # one by one: a single call would XOR where shadows overlap
            cv2.fillPoly(shade, [poly], 1, cv2.LINE_8, 4)
        rows = slice(max(int(c.cy), 0), c.h)  # shadows lie on the ground, below the horizon
        view = c.image[rows]
        cv2.copyTo(cv2.convertScaleAbs(view, alpha=k), shade[rows], view)


def draw_backdrop(c: Canvas, d: Backdrop, rng: np.random.Generator) -> None:
    """Distant skyline and tree line, hazed towards the horizon colour; not counted."""
    haze = 0.5 if d.kind == "building" else 0.35
    col = tuple(int(a * (1 - haze) + b * haze) for a, b in zip(c.lit(d.color), c.look.sky_horizon))
    if d.kind == "building":
        outline = c.fronto(0, d.z, _rect(d.x0, 0, d.x1, d.height))
        c.paint([outline], col, "building", d.z)
        if c.look.lamps_on and c.visible(outline):
            n = int((d.x1 - d.x0) * d.height / 40)
            xs, ys = rng.uniform(d.x0 + 1, d.x1 - 1, n), rng.uniform(1, d.height - 1, n)
            keep = rng.random(n) < c.look.lit_windows
            if keep.any():
                pts = np.stack([xs[keep], ys[keep]], 1)[:, None, :] + _rect(0, 0, 0.9, 1.1)
                c.paint(c.fronto(0, d.z, pts), (235, 186, 120))
    else:
        xs = np.linspace(d.x0, d.x1, 9)
        top = d.height * (0.75 + 0.25 * np.sin(xs * 0.7) * np.cos(xs * 0.23))
        pts = np.concatenate([[(d.x0, 0.0)], np.stack([xs, top], 1), [(d.x1, 0.0)]])
        c.paint([c.fronto(0, d.z, pts)], col, "tree", d.z)


LIT_WINDOW = (236, 186, 112)


def draw_building(c: Canvas, b: Building, sun_from: int) -> bool:
    look = c.look
    shade = look.sun_shade[0] if -b.side == sun_from else look.sun_shade[1]
    front_shade = 0.5 * (look.sun_shade[0] + look.sun_shade[1])
    h, X = b.height, b.x
    front = c.fronto(0, b.z0, _rect(X, 0, X + b.side * b.depth, h))
    c.paint([front], c.lit(b.color, front_shade), "building", b.z0)
    layers = [([c.plane(X, [(b.z0, 0), (b.z0, h), (b.z1, h), (b.z1, 0)])], c.lit(b.color, shade)),
              ([c.plane(X, [(b.z0, h - 0.5), (b.z0, h), (b.z1, h), (b.z1, h - 0.5)])], c.lit(b.frame_color, shade))]
    # windows: a grid on the side facade and on the front face; at night some are lit
    first = 1 if b.shop else 0
    floors = np.arange(first, int((h - 0.8) // b.floor_h)) * b.floor_h + (b.floor_h - b.win_h) * 0.55
    zs = np.arange(b.z0 + 0.8, b.z1 - b.win_w - 0.4, b.win_step)
    xs = np.arange(0.8, b.depth - b.win_w - 0.4, b.win_step)
    rng = np.random.default_rng(b.win_seed)
    lit_side = (rng.random((len(floors), len(zs))) < look.lit_windows).ravel()
    lit_front = (rng.random((len(floors), len(xs))) < look.lit_windows).ravel()
    shop_lit = look.lamps_on and rng.random() < 0.6
    glass = c.glass(shade)
    if len(floors) and len(zs) and c.visible(layers[0][0][0]):
        zz, yy = np.tile(zs, len(floors)), np.repeat(floors, len(zs))
        big = c.f * b.win_h / np.maximum(zz, NEAR) >= 1.5
        quads = c.plane(X, np.stack([zz, yy], 1)[big, None, :] + [(0, 0), (0, b.win_h), (b.win_w, b.win_h), (b.win_w, 0)])
        for on, color in ((False, glass), (True, LIT_WINDOW)):
            sel = lit_side[big] == on
            if sel.any():
                layers.append((quads[sel], color))
    if b.shop:
        segs = np.arange(b.z0 + 0.6, b.z1 - 2.0, 2.6)
        if len(segs):
            pts = np.stack([np.stack([segs, segs, segs + 1.9, segs + 1.9], 1),
                            np.broadcast_to([0.7, 2.4, 2.4, 0.7], (len(segs), 4))], -1)
            layers.append((c.plane(X, pts), (214, 182, 140) if shop_lit else glass))
    drawn = c.paint_plane(X, layers, "building") | c.visible(front)
    if drawn and len(floors) and len(xs) and c.f * b.win_h / b.z0 >= 1.5:
        xx, yy = np.tile(X + b.side * xs, len(floors)), np.repeat(floors, len(xs))
        w = b.side * b.win_w
        quads = c.fronto(0, b.z0, np.stack([xx, yy], 1)[:, None, :] + [(0, 0), (w, 0), (w, b.win_h), (0, b.win_h)])
        for on, color in ((False, c.glass(front_shade)), (True, LIT_WINDOW)):
            sel = lit_front == on
            if sel.any():
                c.paint(quads[sel], color)
    return drawn


def draw_tree(c: Canvas, t: Tree) -> bool:
    drawn = False
    if not t.shrub:
        trunk = c.fronto(t.x, t.z, [(-t.trunk_w / 2, 0), (t.trunk_w / 2, 0), (t.trunk_w * 0.35, t.trunk_h + 0.5),
                                    (-t.trunk_w * 0.35, t.trunk_h + 0.5)])
        c.paint([trunk], c.lit((88, 66, 48)), "tree", t.z)
        drawn = c.visible(trunk)
    # crown: overlapping discs in shade, then smaller lit discs shifted up towards the light
    lift = t.trunk_h
    crown = [c.fronto(t.x, t.z, _circle(dx, lift + dy + (r if t.shrub else 0), r)) for dx, dy, r in t.blobs]
    c.paint(crown, c.lit(t.color, 0.72), "tree", t.z)
    if c.size_px(t.blobs[0][2], t.z) >= 3:
        c.paint([c.fronto(t.x, t.z, _circle(dx - 0.15 * r, lift + dy + (r if t.shrub else 0) + 0.2 * r, 0.7 * r))
                 for dx, dy, r in t.blobs[1::2]], c.lit(t.color, 1.0))
    return drawn or c.visible(np.concatenate(crown))


def draw_light(c: Canvas, s: StreetLight) -> bool:
    pole = c.fronto(s.x, s.z, _rect(-0.08, 0, 0.08, s.height))
    arm = c.fronto(s.x, s.z, [(0, s.height - 0.12), (s.arm, s.height - 0.05), (s.arm, s.height + 0.05), (0, s.height)])
    c.paint([pole, arm], c.lit((112, 114, 118)), "pole", s.z)
    head = (255, 228, 170) if c.look.lamps_on else c.lit((200, 200, 196))
    lx = s.x + s.arm
    c.paint([c.fronto(lx, s.z, _rect(-0.35, s.height - 0.22, 0.35, s.height))], head, "pole", s.z)
    drawn = c.visible(pole)
    if drawn and c.look.lamps_on:
        c.glow(lx, s.height - 0.2, s.z, 0.9, (255, 214, 150), 0.55 * c.look.lamp_gain)
        c.pool(c.ground(_circle(lx * 0.7 + s.x * 0.3, s.z, 6.0, CIRCLE16)), 0.45)
    return drawn


def draw_pole(c: Canvas, p: Pole) -> bool:
    poly = c.fronto(p.x, p.z, _rect(-p.width / 2, 0, p.width / 2, p.height))
    c.paint([poly], c.lit(p.color), "pole", p.z)
    return c.visible(poly)


def draw_sign(c: Canvas, s: Sign) -> bool:
    r = s.size / 2
    cy = s.bottom + r
    c.paint([c.fronto(s.x, s.z, _rect(-0.035, 0, 0.035, cy))], c.lit((120, 122, 126)), "pole", s.z)

    def part(pts, color, cls=None):   # the outline names the class, inner parts only recolour
        poly = c.fronto(s.x, s.z, pts)
        c.paint([poly], c.lit(color), cls, s.z)
        return poly

    white, black = (238, 238, 234), (22, 22, 22)
    if s.kind == "stop":   # red octagon, white rim, white lettering
        outline = part(_circle(0, cy, r, OCTAGON), white, "stop_sign")
        part(_circle(0, cy, r * 0.88, OCTAGON), (196, 22, 28))
        letters = [c.fronto(s.x, s.z, _rect((-0.62 + 0.32 * i) * r, cy - 0.17 * r, (-0.4 + 0.32 * i) * r, cy + 0.17 * r)) for i in range(4)]
        c.paint(letters, c.lit(white))
    elif s.kind == "warning":  # red-bordered triangle, white or yellow inside, black pictogram
        tri = lambda rr, yc: np.array([(0, yc + rr), (-rr * 0.866, yc - rr / 2), (rr * 0.866, yc - rr / 2)])  # noqa: E731
        outline = part(tri(r * 1.15, cy), (204, 26, 32), "warning_sign")
        part(tri(r * 0.72, cy - 0.02 * r), (240, 238, 230) if s.variant % 2 else (236, 212, 90))
        if s.variant < 2:
            symbol = [_rect(-0.06 * r, cy - 0.05 * r, 0.06 * r, cy + 0.4 * r), _rect(-0.06 * r, cy - 0.28 * r, 0.06 * r, cy - 0.16 * r)]
        else:
            symbol = [np.array([(-0.3 * r, cy - 0.25 * r), (0.0, cy + 0.35 * r), (0.3 * r, cy - 0.25 * r)])]
        c.paint([c.fronto(s.x, s.z, p) for p in symbol], c.lit(black))
    elif s.variant == 0:  # blue mandatory disc with a white arrow
        outline = part(_circle(0, cy, r, CIRCLE16), (28, 72, 170), "traffic_sign")
        part(np.array([(-0.1, -0.55), (0.1, -0.55), (0.1, 0.1), (0.35, 0.1), (0, 0.6), (-0.35, 0.1), (-0.1, 0.1)]) * r + (0, cy),
             (240, 240, 240))
    elif s.variant == 1:  # speed limit: red ring, white disc, dark digits
        outline = part(_circle(0, cy, r, CIRCLE16), (200, 30, 34), "traffic_sign")
        part(_circle(0, cy, r * 0.78, CIRCLE16), (240, 240, 236))
        c.paint([c.fronto(s.x, s.z, _rect(-0.4 * r, cy - 0.3 * r, -0.06 * r, cy + 0.3 * r)),
                 c.fronto(s.x, s.z, _rect(0.06 * r, cy - 0.3 * r, 0.4 * r, cy + 0.3 * r))], c.lit((30, 30, 30)))
    elif s.variant == 2:  # blue information square
        outline = part(_rect(-r, cy - r, r, cy + r), (30, 80, 170), "traffic_sign")
        part(_rect(-0.3 * r, cy - 0.6 * r, 0.3 * r, cy + 0.6 * r), (240, 240, 240))
    else:                 # yellow priority diamond
        diamond = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)], np.float64)
        outline = part(diamond * r + (0, cy), white, "traffic_sign")
        part(diamond * r * 0.7 + (0, cy), (232, 188, 30))
    return c.visible(outline)


def draw_fence(c: Canvas, f: Fence, shade: float) -> bool:
    rails = [[(f.z0, y), (f.z1, y), (f.z1, y + 0.07), (f.z0, y + 0.07)] for y in (0.3 * f.height, 0.62 * f.height, f.height - 0.07)]
    posts = np.arange(f.z0, f.z1, f.post_step)[:, None, None] + np.array([(0, 0), (0.09, 0), (0.09, f.height), (0, f.height)])
    posts[..., 1] = np.broadcast_to([0, 0, f.height, f.height], posts.shape[:2])
    layers = [(list(c.plane(f.x, rails)) + list(c.plane(f.x, posts)), c.lit(f.color, shade))]
    # pickets near the camera, where they are wider than a pixel
    zs = np.arange(f.z0, min(f.z1, 40.0), f.post_step / 8)
    if len(zs):
        pickets = np.stack([np.stack([zs, zs, zs + 0.05, zs + 0.05], 1),
                            np.broadcast_to([0.05, f.height * 0.95, f.height * 0.95, 0.05], (len(zs), 4))], -1)
        layers.insert(0, (c.plane(f.x, pickets), c.lit(f.color, shade * 0.85)))
    return c.paint_plane(f.x, layers, "fence")


WHEEL = CIRCLE * 0.33


def draw_car(c: Canvas, car: Car, sun_from: int) -> bool:
    look = c.look
    W, H, L, z = car.width, car.height, car.length, car.z
    detailed = c.size_px(H, z) >= 10
    drawn = False
    side_sign = 1 if car.x > 0 else -1
    if abs(car.x) > W / 2:  # the side facing the camera axis
        X = car.x - side_sign * W / 2
        shade = look.sun_shade[0] if -side_sign == sun_from else look.sun_shade[1]
        sil = [(z, 0.22), (z, 0.62 * H), (z + 0.2 * L, 0.66 * H), (z + 0.32 * L, H), (z + 0.76 * L, H),
               (z + 0.88 * L, 0.66 * H), (z + L, 0.62 * H), (z + L, 0.22)]
        layers = [([c.plane(X, sil)], c.lit(car.color, shade))]
        if detailed:
            win = [(z + 0.24 * L, 0.68 * H), (z + 0.34 * L, 0.95 * H), (z + 0.74 * L, 0.95 * H), (z + 0.85 * L, 0.68 * H)]
            layers += [([c.plane(X, win)], c.glass(shade)),
                       ([c.plane(X, WHEEL + (z + 0.18 * L, 0.33)), c.plane(X, WHEEL + (z + 0.8 * L, 0.33))], c.lit((22, 22, 24)))]
        drawn = c.paint_plane(X, layers, "car")
    face = lambda pts: c.fronto(car.x, z, pts)  # noqa: E731
    body = face([(-W / 2, 0.22), (W / 2, 0.22), (W / 2, 0.62 * H), (0.44 * W, 0.67 * H), (0.36 * W, H),
                 (-0.36 * W, H), (-0.44 * W, 0.67 * H), (-W / 2, 0.62 * H)])
    c.paint([face(_rect(-W / 2 + 0.04, 0, -W / 2 + 0.34, 0.34)), face(_rect(W / 2 - 0.34, 0, W / 2 - 0.04, 0.34))],
            c.lit((20, 20, 22)), "car", z)
    c.paint([body], c.lit(car.color, 0.5 * (look.sun_shade[0] + look.sun_shade[1])), "car", z)
    if not (drawn or c.visible(body)):
        return False
    lamps = [face(_rect(-0.48 * W, 0.48 * H, -0.3 * W, 0.58 * H)), face(_rect(0.3 * W, 0.48 * H, 0.48 * W, 0.58 * H))]
    if detailed:
        c.paint([face([(-0.38 * W, 0.7 * H), (0.38 * W, 0.7 * H), (0.32 * W, 0.96 * H), (-0.32 * W, 0.96 * H)])], c.glass())
        c.paint([face(_rect(-W / 2, 0.22, W / 2, 0.32))], c.lit((36, 36, 38)))
        c.paint([face(_rect(-0.13, 0.34, 0.13, 0.46))], c.lit((210, 210, 200)))
        if car.facing < 0:
            c.paint([face(_rect(-0.22 * W, 0.38 * H, 0.22 * W, 0.52 * H))], c.lit((30, 30, 32)))
    if car.facing > 0:      # rear: red tail lights
        color = (255, 46, 36) if look.lights_on else c.lit((170, 24, 24))
        glow_color, strength, radius = (255, 40, 30), 0.5, 0.35
    else:                   # front: headlights
        color = (255, 250, 232) if look.lights_on else c.lit((215, 215, 205))
        glow_color, strength, radius = (255, 244, 220), 0.7, 0.5
    c.paint(lamps, color)
    if look.lights_on:
        gain = 1.0 if look.lamps_on else 0.35
        for lx in (-0.39 * W, 0.39 * W):
            c.glow(car.x + lx, 0.53 * H, z, radius, glow_color, strength * gain)
        if car.facing < 0:
            c.pool(c.ground([(car.x - 1.2, z), (car.x + 1.2, z), (car.x + 2.5, max(z - 14, NEAR)),
                             (car.x - 2.5, max(z - 14, NEAR))]), 0.45, (1.0, 0.97, 0.9))
    return True


def draw_pedestrian(c: Canvas, p: Pedestrian) -> bool:
    h, s = p.height, p.stride * p.height * 0.3
    face = lambda pts: c.fronto(p.x, p.z, np.asarray(pts) * h)  # noqa: E731
    if c.size_px(h, p.z) < 8:   # a few pixels tall: one silhouette
        body = face([(-0.1, 0), (0.1, 0), (0.13, 0.8), (0.06, 0.96), (-0.06, 0.96), (-0.13, 0.8)])
        c.paint([body], c.lit(p.shirt, 0.8), "pedestrian", p.z)
        return c.visible(body)
    legs = [face([(-0.1, 0.48), (-0.02, 0.48), (-0.03 - s / h, 0), (-0.1 - s / h, 0)]),
            face([(0.02, 0.48), (0.1, 0.48), (0.1 + s / h, 0), (0.03 + s / h, 0)])]
    c.paint(legs, c.lit(p.pants), "pedestrian", p.z)
    c.paint([face(_rect(-0.17, 0.5, -0.12, 0.8)), face(_rect(0.12, 0.5, 0.17, 0.8))], c.lit(p.shirt, 0.85), "pedestrian", p.z)
    torso = face([(-0.11, 0.46), (0.11, 0.46), (0.13, 0.81), (-0.13, 0.81)])
    c.paint([torso], c.lit(p.shirt), "pedestrian", p.z)
    c.paint([face(_circle(0, 0.895, 0.065))], c.lit(p.skin), "pedestrian", p.z)
    c.paint([face(_circle(0, 0.9, 0.058, HALF_DISC))], c.lit(p.hair))
    return c.visible(torso)


def draw_bicyclist(c: Canvas, b: Bicyclist) -> bool:
    z, X = b.z, b.x

    def bar(p0, p1, t=0.035):
        return [(p0[0], p0[1] - t), (p1[0], p1[1] - t), (p1[0], p1[1] + t), (p0[0], p0[1] + t)]

    # the bicycle on its own vertical plane: tyres as rings (a contour with a hole), then the frame
    rings = c.plane(X, np.stack([CIRCLE16 * rad + (zc, 0.34) for zc in (z, z + 1.05) for rad in (0.34, 0.27)]))
    hub0, hub1, seat, bars, crank = (z, 0.34), (z + 1.05, 0.34), (z + 0.3, 0.92), (z + 0.95, 1.0), (z + 0.5, 0.3)
    frame = [bar(hub0, seat), bar(seat, crank), bar(crank, hub0), bar(crank, bars), bar(bars, hub1), bar(seat, bars)]
    drawn = c.paint_plane(X, [(rings, c.lit((24, 24, 24))), (list(c.plane(X, frame)), c.lit(b.bike)),
                              ([c.plane(X, bar(seat, crank, 0.07))], c.lit((40, 42, 60)))], "bicyclist")
    # the rider's torso and head face the camera
    zr = z + 0.45
    face = lambda pts: c.fronto(X, zr, pts)  # noqa: E731
    torso = face([(-0.16, 0.95), (0.16, 0.95), (0.2, 1.5), (-0.2, 1.5)])
    c.paint([torso], c.lit(b.shirt), "bicyclist", zr)
    c.paint([face(_rect(-0.26, 1.1, -0.19, 1.45)), face(_rect(0.19, 1.1, 0.26, 1.45))], c.lit(b.shirt, 0.85), "bicyclist", zr)
    c.paint([face(_circle(0, 1.63, 0.11))], c.lit(b.skin), "bicyclist", zr)
    c.paint([face(_circle(0, 1.66, 0.125, HALF_DISC))], c.lit((230, 60, 40)), "bicyclist", zr)
    drawn |= c.visible(torso)
    if c.look.lights_on and drawn:
        color = (255, 40, 30) if b.direction > 0 else (255, 250, 230)
        c.glow(X, 0.8, z, 0.2, color, 0.5)
    return drawn


def draw_scene(c: Canvas, scene: Scene, rng: np.random.Generator) -> Counter:
    """Ground first, then every object far to near; returns the objects drawn per class."""
    draw_ground(c, scene)
    if c.look.lights_on:   # our own headlights: nested beams, brighter near the car
        for reach, strength in ((45.0, 0.12), (30.0, 0.25), (18.0, 0.38), (10.0, 0.5)):
            c.pool(c.ground([(-1.1, 2.5), (1.1, 2.5), (1.0 + 0.12 * reach, reach), (-1.0 - 0.12 * reach, reach)]),
                   strength, (1.0, 0.97, 0.9))
    for d in scene.backdrop:
        draw_backdrop(c, d, rng)
    fence_shade = lambda f: c.look.sun_shade[0] if -np.sign(f.x) == scene.sun_from else c.look.sun_shade[1]  # noqa: E731
    sign_class = {"stop": "stop_sign", "warning": "warning_sign", "other": "traffic_sign"}
    items = [(b.z0, "building", lambda b=b: draw_building(c, b, scene.sun_from)) for b in scene.buildings]
    items += [(t.z, "tree", lambda t=t: draw_tree(c, t)) for t in scene.trees]
    items += [(s.z, "pole", lambda s=s: draw_light(c, s)) for s in scene.lights]
    items += [(p.z, "pole", lambda p=p: draw_pole(c, p)) for p in scene.poles]
    items += [(s.z, sign_class[s.kind], lambda s=s: draw_sign(c, s)) for s in scene.signs]
    items += [(f.z0, "fence", lambda f=f: draw_fence(c, f, fence_shade(f))) for f in scene.fences]
    items += [(k.z, "car", lambda k=k: draw_car(c, k, scene.sun_from)) for k in scene.cars]
    items += [(p.z, "pedestrian", lambda p=p: draw_pedestrian(c, p)) for p in scene.pedestrians]
    items += [(b.z, "bicyclist", lambda b=b: draw_bicyclist(c, b)) for b in scene.bicyclists]
    items.sort(key=lambda item: -item[0])
    drawn: Counter = Counter()
    for _, name, draw in items:
        if draw():
            drawn[name] += 1
    return drawn
