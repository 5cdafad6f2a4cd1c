"""A random MiniCity street scene: its camera, its surface-id map and its surfaces.

The layout is a straight street seen from a car (or, SYNTHIA-like, from a higher viewpoint): road
lanes with markings, kerbs, sidewalks with tree lawns, lots with buildings (windows are drawn by the
renderer), parks, walls and fences, an optional cross street with a crosswalk and traffic lights or a
T-junction closing the view, poles with lamps, lights and signs, trees, parked and moving cars,
trucks, buses, trams, pedestrians, cyclists and motorcyclists. Every image features one large rare
vehicle in turn (tram, bus, truck, motorcycle), so even a handful of images shows all 19 classes.

The same :class:`SceneConfig` gives the same *distribution* of layouts; the appearance is the
renderer's job (``render.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from adaptseg.data.labels import CITYSCAPES_LUT
from adaptseg.data.minicity import objects as obj
from adaptseg.data.minicity.geometry import Camera, Canvas, LabelId, Material, SurfaceTable

Rng = np.random.Generator

FEATURES = ("tram", "bus", "truck", "motorcycle")
_FAR = 260.0


@dataclass(frozen=True)
class SceneConfig:
    """The layout distribution of one domain."""

    cam_height: tuple[float, float] = (1.3, 1.7)
    horizon: tuple[float, float] = (0.36, 0.46)  # horizon row / image height
    focal: tuple[float, float] = (0.7, 0.9)  # focal length / image width
    yaw: float = 0.1  # largest |yaw| (rad)
    terrain: bool = True
    trucks: bool = True
    trains: bool = True
    ego_hood: bool = False
    traffic: float = 1.0  # multiplies the number of vehicles and people


@dataclass
class Scene:
    """One laid-out scene: ``ids`` indexes ``table``; ``shadow`` marks cast shadows on the ground."""

    camera: Camera
    ids: np.ndarray
    table: SurfaceTable
    shadow: np.ndarray
    sun: np.ndarray  # unit vector towards the sun (world)
    lights: np.ndarray  # (n, 4): x, y, z, kind (0 lamp, 1 headlight, 2 taillight, 3-5 signal)
    features: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label_ids(self) -> np.ndarray:
        """Cityscapes labelIds (uint8 H×W)."""
        return self.table.label[self.ids]

    @property
    def train_ids(self) -> np.ndarray:
        """Cityscapes trainIds (uint8 H×W, 255 = ignore)."""
        return CITYSCAPES_LUT[self.label_ids]

    @property
    def instances(self) -> np.ndarray:
        """Instance ids (uint16 H×W, 0 = stuff)."""
        return self.table.instance[self.ids]


@dataclass
class _Street:
    """The cross-section of the street (X positions) and its special places (Z positions)."""

    lane_w: float
    road_left: float
    road_right: float
    lane_lines: list[tuple[float, bool]]  # (x, dashed)
    same_dir_lanes: list[float]  # lane centres, traffic going away
    oncoming_lanes: list[float]
    parking_left: bool
    parking_right: bool
    lawn_left: float
    lawn_right: float
    walk_left: float
    walk_right: float
    cross: tuple[float, float] | None  # cross street (z0, z1)
    end: float | None  # Z of a T-junction facade closing the street

    @property
    def lot_left(self) -> float:
        return self.road_left - self.lawn_left - self.walk_left

    @property
    def lot_right(self) -> float:
        return self.road_right + self.lawn_right + self.walk_right

    def in_cross(self, z0: float, z1: float) -> bool:
        return self.cross is not None and z1 > self.cross[0] and z0 < self.cross[1]

    @property
    def z_stop(self) -> float:
        return self.end - 14.0 if self.end is not None else _FAR


def _sample_street(rng: Rng, cfg: SceneConfig) -> _Street:
    lane_w = rng.uniform(3.0, 3.6)
    same = 1 + int(rng.random() < 0.3)
    oncoming = int(rng.choice([0, 1, 2], p=[0.15, 0.6, 0.25]))
    cam_lane = int(rng.integers(0, same))  # 0 = rightmost
    park_r = rng.random() < 0.55
    park_l = rng.random() < 0.4
    right = lane_w * (0.5 + cam_lane) + (2.2 if park_r else 0.0)
    same_centres = [-(k - cam_lane) * lane_w for k in range(same)]
    left_same = lane_w * (same - cam_lane - 0.5)
    oncoming_centres = [-(left_same + lane_w * (k + 0.5)) for k in range(oncoming)]
    left = -(left_same + oncoming * lane_w + (2.2 if park_l else 0.0))
    lines: list[tuple[float, bool]] = []
    for k in range(1, same):
        lines.append((-(lane_w * (k - cam_lane - 0.5)), True))
    if oncoming:
        lines.append((-left_same, rng.random() < 0.6))
        for k in range(1, oncoming):
            lines.append((-(left_same + lane_w * k), True))
    if rng.random() < 0.5:
        lines.append((right - (2.2 if park_r else 0.25), False))
    lawn = [rng.uniform(0.8, 2.2) if (cfg.terrain and rng.random() < 0.35) else 0.0 for _ in range(2)]
    walks = [rng.uniform(1.8, 4.5), rng.uniform(1.8, 4.5)]
    cross = None
    end = None
    if rng.random() < 0.3:
        end = rng.uniform(55.0, 130.0)
    if rng.random() < 0.4:
        z0 = rng.uniform(14.0, 45.0)
        if end is None or z0 + 30 < end:
            cross = (z0, z0 + rng.uniform(9.0, 15.0))
    return _Street(
        lane_w,
        left,
        right,
        lines,
        same_centres,
        oncoming_centres,
        park_l,
        park_r,
        lawn[0],
        lawn[1],
        walks[0],
        walks[1],
        cross,
        end,
    )


def _sample_camera(rng: Rng, size: tuple[int, int], cfg: SceneConfig) -> Camera:
    h, w = size
    return Camera(
        height=h,
        width=w,
        focal=w * rng.uniform(*cfg.focal),
        cx=w / 2 + rng.uniform(-0.03, 0.03) * w,
        cy=h * rng.uniform(*cfg.horizon),
        cam_height=rng.uniform(*cfg.cam_height),
        yaw=rng.uniform(-cfg.yaw, cfg.yaw),
    )


def _sample_sun(rng: Rng) -> np.ndarray:
    elevation = math.radians(rng.uniform(25.0, 65.0))
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    return np.array(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ]
    )


class _Builder:
    """Lays out one scene: ground, buildings, then every object far to near."""

    def __init__(self, rng: Rng, size: tuple[int, int], cfg: SceneConfig, feature: str):
        self.rng = rng
        self.cfg = cfg
        self.camera = _sample_camera(rng, size, cfg)
        self.cv = Canvas(self.camera)
        self.sun = _sample_sun(rng)
        self.street = _sample_street(rng, cfg)
        self.feature = feature
        self.objects: list[tuple[float, Callable[[], None]]] = []

    # -- helpers --------------------------------------------------------------------------------
    def place(self, x: float, z: float, draw: Callable[[], None]) -> None:
        """Queue an object whose nearest point is at (x, z) for far-to-near drawing."""
        self.objects.append((math.hypot(x, max(z, 0.0)), draw))

    def ground_strip(
        self,
        x0: float,
        x1: float,
        z0: float,
        z1: float,
        label: int,
        material: int,
        variant: float | None = None,
        **kw,
    ) -> None:
        sid = self.cv.ground_surface(label, material, self.rng.random() if variant is None else variant, **kw)
        self.cv.ground([(x0, z0), (x1, z0), (x1, z1), (x0, z1)], sid)

    def free_z(self, z0: float, z1: float) -> bool:
        return not self.street.in_cross(z0 - 1.0, z1 + 1.0) and z1 < self.street.z_stop

    # -- ground -----------------------------------------------------------------------------------
    def ground(self) -> None:
        st = self.street
        self.ground_strip(-400, 400, 0.2, 600, LabelId.GROUND, Material.GROUND)
        ground_label = LabelId.TERRAIN if self.cfg.terrain else LabelId.SIDEWALK
        ground_mat = Material.TERRAIN if self.cfg.terrain else Material.SIDEWALK
        for side in (-1, 1):
            lot = st.lot_left if side < 0 else st.lot_right
            lawn = st.lawn_left if side < 0 else st.lawn_right
            road = st.road_left if side < 0 else st.road_right
            far = lot + side * 80
            self.ground_strip(min(lot, far), max(lot, far), 0.2, _FAR, ground_label, ground_mat)
            walk_x = (road + side * lawn, lot)
            self.ground_strip(min(walk_x), max(walk_x), 0.2, _FAR, LabelId.SIDEWALK, Material.SIDEWALK)
            if lawn:
                lx = (road, road + side * lawn)
                self.ground_strip(min(lx), max(lx), 0.2, _FAR, LabelId.TERRAIN, Material.TERRAIN)
            kerb = (road, road + side * 0.18)
            self.ground_strip(min(kerb), max(kerb), 0.2, _FAR, LabelId.SIDEWALK, Material.CURB)
        self.ground_strip(st.road_left, st.road_right, 0.2, _FAR, LabelId.ROAD, Material.ROAD)
        if st.cross is not None:
            self.ground_strip(-300, 300, st.cross[0], st.cross[1], LabelId.ROAD, Material.ROAD)
        if st.end is not None:
            z1 = st.end - 4.0
            self.ground_strip(-300, 300, z1 - 10.0, z1, LabelId.ROAD, Material.ROAD)
            self.ground_strip(-300, 300, z1, st.end + 1, LabelId.SIDEWALK, Material.SIDEWALK)
        self.markings()

    def markings(self) -> None:
        st, rng = self.street, self.rng
        paint = self.cv.ground_surface(LabelId.ROAD, Material.PAINT, rng.random() * 0.3, lane_mark=True)
        width = rng.uniform(0.1, 0.16)
        dash, gap = rng.uniform(2.5, 4.0), rng.uniform(4.0, 8.0)
        z_end = min(st.z_stop + (10.0 if st.end is not None else 0.0), 100.0)  # farther dashes are sub-pixel
        for x, dashed in st.lane_lines:
            z = rng.uniform(-gap, 0.0) if dashed else 0.2
            while z < z_end:
                z1 = min(z + dash, z_end) if dashed else z_end
                segs = [(z, z1)]
                if st.cross is not None:
                    segs = [(a, min(b, st.cross[0] - 5.0)) for a, b in segs if a < st.cross[0] - 5.0] + [
                        (max(a, st.cross[1] + 1.0), b) for a, b in segs if b > st.cross[1] + 1.0
                    ]
                for a, b in segs:
                    if b > a:
                        self.cv.ground(
                            [(x - width / 2, a), (x + width / 2, a), (x + width / 2, b), (x - width / 2, b)],
                            paint,
                        )
                if not dashed:
                    break
                z = z1 + gap
        if st.cross is not None:
            z0 = st.cross[0]
            if rng.random() < 0.7:  # zebra crossing
                x = st.road_left + 0.3
                while x + 0.5 < st.road_right:
                    self.cv.ground(
                        [(x, z0 - 4.0), (x + 0.5, z0 - 4.0), (x + 0.5, z0 - 1.0), (x, z0 - 1.0)], paint
                    )
                    x += 1.0
            stop = [
                (st.road_left, z0 - 5.5),
                (st.road_right, z0 - 5.5),
                (st.road_right, z0 - 5.1),
                (st.road_left, z0 - 5.1),
            ]
            self.cv.ground(stop, paint)
        if self.feature == "tram" and self.cfg.trains:
            rail = self.cv.ground_surface(LabelId.ROAD, Material.RAIL, rng.random())
            x = self.tram_lane()
            for off in (-0.72, 0.72):
                for r in (off - 0.04, off + 0.04):
                    self.cv.ground(
                        [
                            (x + r - 0.03, 0.2),
                            (x + r + 0.03, 0.2),
                            (x + r + 0.03, st.z_stop),
                            (x + r - 0.03, st.z_stop),
                        ],
                        rail,
                    )

    def tram_lane(self) -> float:
        st = self.street
        return st.oncoming_lanes[0] if st.oncoming_lanes else st.same_dir_lanes[-1]

    # -- buildings and lots --------------------------------------------------------------------------
    def building(self, x0: float, x1: float, z0: float, z1: float, height: float) -> None:
        rng = self.rng
        params = (
            rng.uniform(2.2, 3.6),
            rng.uniform(2.8, 3.6),
            rng.uniform(0.35, 0.65),
            rng.uniform(0.4, 0.65),
        )
        obj.cast_shadow(self.cv, self.sun, x0, x1, z0, z1, height)
        self.cv.box(
            x0, x1, 0.0, height, z0, z1, LabelId.BUILDING, Material.FACADE, rng.random(), params=params
        )

    def background(self) -> None:
        """Far buildings behind the lots (seen through gaps) and the T-junction facade."""
        st, rng = self.street, self.rng
        boxes = []
        for side in (-1, 1):
            lot = st.lot_left if side < 0 else st.lot_right
            z = rng.uniform(-5.0, 5.0)
            while z < min(_FAR, st.z_stop + 20):
                length = rng.uniform(12.0, 35.0)
                inner = lot + side * rng.uniform(18.0, 30.0)
                xs = sorted((inner, inner + side * 20.0))
                if rng.random() < 0.85:
                    boxes.append((xs[0], xs[1], z, z + length, rng.uniform(10.0, 40.0)))
                z += length
        if st.end is not None:
            x = -rng.uniform(60.0, 90.0)
            while x < 90.0:
                width = rng.uniform(10.0, 25.0)
                boxes.append((x, x + width, st.end, st.end + 15.0, rng.uniform(9.0, 30.0)))
                x += width
        boxes.sort(key=lambda b: -max(b[2], 0.0) - 0.01 * min(abs(b[0]), abs(b[1])))
        for b in boxes:
            self.building(*b)

    def lots(self) -> None:
        for side in (-1, 1):
            self.lot_side(side)

    def lot_side(self, side: int) -> None:
        st, rng, cfg = self.street, self.rng, self.cfg
        lot = st.lot_left if side < 0 else st.lot_right
        z = rng.uniform(-10.0, 0.0)
        buildings: list[tuple] = []
        kinds = ["building", "park", "wall", "fence", "open"]
        weights = np.array([0.58, 0.14, 0.09, 0.11, 0.08])
        while z < st.z_stop:
            length = rng.uniform(8.0, 28.0)
            z0, z1 = z, min(z + length, st.z_stop)
            if st.cross is not None and z1 > st.cross[0] and z0 < st.cross[1]:
                if z0 < st.cross[0] - 4.0:
                    z1 = st.cross[0]
                else:
                    z = st.cross[1]
                    continue
            z = z1
            kind = kinds[int(rng.choice(5, p=weights))]
            setback = 0.0 if rng.random() < 0.6 else rng.uniform(1.0, 5.0)
            if kind in ("wall", "fence"):
                setback = rng.uniform(3.0, 10.0)
            front = lot + side * setback
            if setback > 0 or kind in ("park", "open"):
                ground_x = sorted((lot, lot + side * 40.0))
                if kind == "open" or not cfg.terrain:
                    label, mat = (
                        (LabelId.SIDEWALK, Material.SIDEWALK)
                        if rng.random() < 0.6
                        else (LabelId.GROUND, Material.GROUND)
                    )
                else:
                    label, mat = LabelId.TERRAIN, Material.TERRAIN
                self.ground_strip(ground_x[0], ground_x[1], z0, z1, label, mat)
            if kind == "building" or (kind in ("wall", "fence") and rng.random() < 0.6):
                gap = 0.0 if rng.random() < 0.6 else rng.uniform(1.0, 4.0)
                depth = rng.uniform(12.0, 20.0)
                height = rng.uniform(7.0, 26.0) if rng.random() < 0.9 else rng.uniform(26.0, 45.0)
                xs = sorted((front, front + side * depth))
                if z1 - gap > z0 + 2.0:
                    buildings.append((xs[0], xs[1], z0, z1 - gap, height))
            else:
                for _ in range(int(rng.integers(1, 4))):
                    tx = front + side * rng.uniform(2.0, 12.0)
                    tz = rng.uniform(z0, z1)
                    self.place(
                        tx,
                        tz,
                        lambda tx=tx, tz=tz: obj.tree(
                            self.cv, self.rng, tx, tz, self.sun, scale=self.rng.uniform(0.9, 1.5)
                        ),
                    )
            xs = sorted((lot, lot + side * 0.3))
            if kind == "wall":
                self.place(
                    xs[0], z0, lambda xs=xs, z0=z0, z1=z1: obj.wall(self.cv, self.rng, *xs, z0, z1, self.sun)
                )
            elif kind == "fence":
                fx = sorted((lot, lot + side * 0.05))
                self.place(
                    fx[0], z0, lambda fx=fx, z0=z0, z1=z1: obj.fence(self.cv, self.rng, *fx, z0, z1, self.sun)
                )
            elif kind == "park" and rng.random() < 0.4:
                hx = sorted((lot + side * 0.2, lot + side * 1.0))
                self.place(
                    hx[0], z0, lambda hx=hx, z0=z0, z1=z1: obj.hedge(self.cv, self.rng, *hx, z0, z1, self.sun)
                )
        # buildings on one side never hide each other's near parts when drawn far to near
        for b in sorted(buildings, key=lambda b: -b[2]):
            self.building(*b)

    # -- street furniture ----------------------------------------------------------------------------
    def furniture(self) -> None:
        st, rng = self.street, self.rng
        for side in (-1, 1):
            road = st.road_left if side < 0 else st.road_right
            lawn = st.lawn_left if side < 0 else st.lawn_right
            lot = st.lot_left if side < 0 else st.lot_right
            pole_x = road + side * (lawn + 0.45) if not lawn else road + side * lawn / 2
            z = rng.uniform(2.0, 12.0)
            while z < min(st.z_stop, 120.0):
                if self.free_z(z, z + 0.3):
                    kind = rng.choice(4, p=[0.35, 0.38, 0.14, 0.13])
                    self.place(pole_x, z, self._pole_fn(int(kind), pole_x, z, -side))
                z += rng.uniform(9.0, 24.0)
            if lawn or rng.random() < 0.3:  # a row of street trees
                tx = road + side * (lawn / 2 if lawn else 0.9)
                z = rng.uniform(3.0, 10.0)
                while z < min(st.z_stop, 110.0):
                    if self.free_z(z, z + 1.0):
                        self.place(tx, z, lambda tx=tx, z=z: obj.tree(self.cv, self.rng, tx, z, self.sun))
                    z += rng.uniform(7.0, 13.0)
            for _ in range(int(rng.poisson(0.6))):
                sx = lot - side * rng.uniform(0.4, 1.2)
                sz = rng.uniform(4.0, 50.0)
                if self.free_z(sz, sz + 1.0):
                    self.place(
                        sx, sz, lambda sx=sx, sz=sz: obj.static_object(self.cv, self.rng, sx, sz, self.sun)
                    )
        if st.cross is not None:
            z0 = st.cross[0] - 1.5
            rx = st.road_right + 0.5
            arm = rng.random() < 0.5
            self.place(
                rx,
                z0,
                lambda: obj.traffic_light_pole(
                    self.cv, self.rng, rx, z0, self.sun, arm_to=(st.same_dir_lanes[0] if arm else None)
                ),
            )
            lx = st.road_left - 0.5
            self.place(lx, z0, lambda: obj.traffic_light_pole(self.cv, self.rng, lx, z0, self.sun))
            fz = st.cross[1] + 1.5
            for fx in (st.road_left - 0.5, st.road_right + 0.5):
                if rng.random() < 0.7:
                    self.place(
                        fx, fz, lambda fx=fx: obj.traffic_light_pole(self.cv, self.rng, fx, fz, self.sun)
                    )

    def _pole_fn(self, kind: int, x: float, z: float, toward: float) -> Callable[[], None]:
        cv, rng, sun = self.cv, self.rng, self.sun
        if kind == 0:
            return lambda: obj.street_lamp(cv, rng, x, z, toward, sun)
        if kind == 1:
            return lambda: obj.sign_pole(cv, rng, x, z, sun)
        if kind == 2:
            return lambda: obj.traffic_light_pole(cv, rng, x, z, sun)
        return lambda: obj.pole(cv, rng, x, z, rng.uniform(1.0, 3.5), 0.1, sun)

    # -- traffic -------------------------------------------------------------------------------------
    def vehicle(self, x: float, z: float, heading: int, kind: str) -> None:
        cv, rng, sun = self.cv, self.rng, self.sun
        draw = {
            "car": lambda: obj.car(cv, rng, x, z, heading, sun),
            "truck": lambda: obj.truck(cv, rng, x, z, heading, sun),
            "bus": lambda: obj.bus(cv, rng, x, z, heading, sun),
            "tram": lambda: obj.tram(cv, rng, x, z, heading, sun),
        }[kind]
        self.place(x - math.copysign(1.2, x), z, draw)

    def _lane_kind(self) -> str:
        r = self.rng.random()
        if self.cfg.trucks and r < 0.07:
            return "truck"
        if r < 0.11:
            return "bus"
        return "car"

    def traffic(self) -> None:
        st, rng, cfg = self.street, self.rng, self.cfg
        busy = cfg.traffic
        occupied: dict[float, list[tuple[float, float]]] = {}

        def free(lane: float, z0: float, z1: float) -> bool:
            return all(z1 + 2.0 < a or z0 - 2.0 > b for a, b in occupied.get(lane, []))

        def claim(lane: float, z0: float, length: float) -> None:
            occupied.setdefault(lane, []).append((z0, z0 + length))

        # the featured rare vehicle, always in view
        feature = self.feature
        if feature == "tram" and not cfg.trains:
            feature = "bus"
        if feature == "truck" and not cfg.trucks:
            feature = "car"
        if feature in ("tram", "bus", "truck", "car"):
            lane = (
                self.tram_lane() if feature == "tram" else rng.choice(st.same_dir_lanes + st.oncoming_lanes)
            )
            heading = -1 if lane in st.oncoming_lanes else 1
            z = rng.uniform(10.0, 30.0) if feature != "car" else rng.uniform(7.0, 20.0)
            if st.cross is not None and st.cross[0] - 8 < z < st.cross[1] + 2:
                z = st.cross[1] + 2.0
            self.vehicle(float(lane), z, heading, feature)
            claim(float(lane), z, 32.0 if feature == "tram" else 13.0)
        else:  # motorcycle with rider
            lane = st.same_dir_lanes[0] + rng.uniform(-0.6, 0.6)
            z = rng.uniform(6.0, 18.0)
            self.place(lane, z, lambda: obj.cyclist_rear(self.cv, self.rng, lane, z, self.sun, motor=True))
            claim(float(st.same_dir_lanes[0]), z, 3.0)

        for lanes, heading in ((st.same_dir_lanes, 1), (st.oncoming_lanes, -1)):
            for lane in lanes:
                for _ in range(int(rng.poisson(1.6 * busy))):
                    z = rng.uniform(6.0 if lane != 0 else 8.0, 70.0)
                    kind = self._lane_kind()
                    length = {"car": 5.0, "truck": 10.5, "bus": 13.0}[kind]
                    if free(lane, z, z + length) and self.free_z(z, z + length):
                        x = lane + rng.uniform(-0.3, 0.3)
                        self.vehicle(x, z, heading, kind)
                        claim(lane, z, length)
        for side, parked in ((-1, st.parking_left), (1, st.parking_right)):
            if not parked:
                continue
            x = (st.road_left + 1.1) if side < 0 else (st.road_right - 1.1)
            z = rng.uniform(-2.0, 4.0)
            while z < 75.0:
                length = 5.0
                if rng.random() < 0.75 and self.free_z(z, z + length):
                    kind = "truck" if (self.cfg.trucks and rng.random() < 0.05) else "car"
                    heading = 1 if (side > 0 or rng.random() < 0.5) else -1
                    self.vehicle(x + rng.uniform(-0.15, 0.15), z, heading, kind)
                    length = 10.0 if kind == "truck" else length
                z += length + rng.uniform(0.6, 3.0)
        if st.cross is not None and rng.random() < 0.6:
            zc = st.cross[0] + rng.uniform(1.0, max(1.5, st.cross[1] - st.cross[0] - 3.0))
            for _ in range(int(rng.integers(1, 3))):
                xc = rng.uniform(-25.0, 25.0)
                self.place(xc, zc, lambda xc=xc, zc=zc: obj.crossing_car(self.cv, self.rng, xc, zc, self.sun))
                zc = min(zc + 3.5, st.cross[1] - 2.0)

    def people(self) -> None:
        st, rng, busy = self.street, self.rng, self.cfg.traffic
        for side in (-1, 1):
            road = st.road_left if side < 0 else st.road_right
            lawn = st.lawn_left if side < 0 else st.lawn_right
            walk = st.walk_left if side < 0 else st.walk_right
            for _ in range(int(rng.poisson(4.0 * busy))):
                x = road + side * (lawn + rng.uniform(0.4, max(0.5, walk - 0.3)))
                z = rng.uniform(3.0, 60.0)
                if not self.free_z(z, z + 0.5):
                    continue
                for k in range(1 + int(rng.random() < 0.25) * int(rng.integers(1, 3))):
                    px, pz = x + k * 0.6 * rng.choice([-1, 1]), z + rng.uniform(-0.4, 0.4)
                    self.place(px, pz, lambda px=px, pz=pz: obj.person(self.cv, self.rng, px, pz, self.sun))
            if rng.random() < 0.45:  # parked bicycles
                x = road + side * (lawn + rng.uniform(0.6, max(0.7, walk - 0.6)))
                z = rng.uniform(4.0, 30.0)
                for k in range(int(rng.integers(1, 4))):
                    bz = z + k * 0.7
                    if self.free_z(bz, bz + 0.2):
                        self.place(
                            x,
                            bz,
                            lambda x=x, bz=bz: obj.bike_side(
                                self.cv,
                                self.rng,
                                x,
                                bz,
                                self.sun,
                                motor=self.rng.random() < 0.2,
                                rider=False,
                                direction=int(self.rng.choice([-1, 1])),
                            ),
                        )
        if rng.random() < 0.45 * busy + (0.5 if self.feature == "motorcycle" else 0.0):  # cyclist on the road
            x = st.road_right - rng.uniform(0.7, 1.4) - (2.2 if st.parking_right else 0.0)
            z = rng.uniform(5.0, 35.0)
            self.place(
                x,
                z,
                lambda: obj.cyclist_rear(self.cv, self.rng, x, z, self.sun, motor=self.rng.random() < 0.25),
            )
        if st.cross is not None:
            z0 = st.cross[0] - 2.5
            for _ in range(int(rng.poisson(1.5 * busy))):
                x = rng.uniform(st.road_left, st.road_right)
                self.place(
                    x,
                    z0,
                    lambda x=x: obj.person(self.cv, self.rng, x, z0 + self.rng.uniform(-1, 1), self.sun),
                )
            if rng.random() < 0.35:
                zc = st.cross[0] + rng.uniform(1.0, 4.0)
                xc = rng.uniform(-15.0, 15.0)
                self.place(
                    xc,
                    zc,
                    lambda: obj.bike_side(
                        self.cv,
                        self.rng,
                        xc,
                        zc,
                        self.sun,
                        motor=self.rng.random() < 0.4,
                        rider=True,
                        direction=int(self.rng.choice([-1, 1])),
                    ),
                )

    def ego_hood(self) -> None:
        """The recording car's bonnet at the bottom of the image (Cityscapes 'ego vehicle', ignored)."""
        import cv2

        h, w = self.camera.height, self.camera.width
        sid = self.cv.surface(
            LabelId.EGO_VEHICLE, Material.EGO, normal=(0.0, 0.0, -1.0), d=-1.2, variant=self.rng.random()
        )
        top = h * (1.0 - self.rng.uniform(0.05, 0.09))
        center = (int(w / 2 * 16), int((top + h * 0.5) * 16))
        axes = (int(w * 0.75 * 16), int(h * 0.5 * 16))
        cv2.ellipse(self.cv.ids, center, axes, 0.0, 180.0, 360.0, int(sid), -1, cv2.LINE_8, 4)
        cv2.rectangle(self.cv.ids, (0, int(top + h * 0.5)), (w, h), int(sid), -1)

    def build(self) -> Scene:
        self.ground()
        self.background()
        self.lots()
        self.furniture()
        self.traffic()
        self.people()
        for _, draw in sorted(self.objects, key=lambda item: -item[0]):
            draw()
        if self.cfg.ego_hood:
            self.ego_hood()
        lights = np.array(self.cv.lights, dtype=np.float32).reshape(-1, 4)
        return Scene(
            self.camera, self.cv.ids, self.cv.table(), self.cv.shadow, self.sun, lights, (self.feature,)
        )


def sample_scene(
    rng: np.random.Generator, size: tuple[int, int], config: SceneConfig = SceneConfig(), index: int = 0
) -> Scene:
    """Lay out one random street scene of ``size`` = (h, w) pixels.

    ``index`` picks the featured rare vehicle (``FEATURES[index % 4]``), so consecutive images cycle
    through trams, buses, trucks and motorcycles.
    """
    return _Builder(rng, size, config, FEATURES[index % len(FEATURES)]).build()
