"""Camera and rasteriser for MiniCity scenes: world-space polygons into a surface-id map.

World coordinates are metres: X to the right, Y up (height above the ground), Z forward; the camera
stands at ``(0, cam_height, 0)`` and may be turned by ``yaw`` about the vertical axis. Its principal
point sits on the horizon row ``cy`` (a shifted lens, so vertical lines stay vertical).

Every drawn polygon belongs to a *surface*: one row of a table holding its Cityscapes labelId, its
material, a per-surface random ``variant`` (which the renderer turns into a colour), its instance, a
few material parameters and the plane it lies on. The plane gives the renderer per-pixel depth and
world coordinates without a depth buffer: ``1 / Zc = a·x' + b·y' + c`` with ``x' = (x - cx) / f`` and
``y' = (y - cy) / f``. Occlusion is resolved by drawing far to near (painter's algorithm).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import IntEnum

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2 fills
_NEAR = 0.3  # near clipping plane (m)


class LabelId(IntEnum):
    """Cityscapes labelIds used by MiniCity (the 19 train classes plus a few void ones)."""

    UNLABELED = 0
    EGO_VEHICLE = 1
    STATIC = 4
    GROUND = 6
    RAIL_TRACK = 10
    ROAD = 7
    SIDEWALK = 8
    BUILDING = 11
    WALL = 12
    FENCE = 13
    POLE = 17
    TRAFFIC_LIGHT = 19
    TRAFFIC_SIGN = 20
    VEGETATION = 21
    TERRAIN = 22
    SKY = 23
    PERSON = 24
    RIDER = 25
    CAR = 26
    TRUCK = 27
    BUS = 28
    TRAIN = 31
    MOTORCYCLE = 32
    BICYCLE = 33


class Material(IntEnum):
    """What a surface is made of; the renderer's styles give each material its colours and texture."""

    SKY = 0
    GROUND = 1
    ROAD = 2
    PAINT = 3
    SIDEWALK = 4
    CURB = 5
    TERRAIN = 6
    FACADE = 7
    WALL = 8
    FENCE = 9
    POLE = 10
    LAMP = 11
    TL_HOUSING = 12
    TL_LAMP = 13
    SIGN = 14
    SIGN_BACK = 15
    FOLIAGE = 16
    TRUNK = 17
    CAR_PAINT = 18
    GLASS = 19
    TIRE = 20
    HEADLIGHT = 21
    TAILLIGHT = 22
    BUS_PAINT = 23
    TRUCK_PAINT = 24
    TRAM_PAINT = 25
    SKIN = 26
    CLOTHES = 27
    HAIR = 28
    BIKE = 29
    STATIC = 30
    RAIL = 31
    EGO = 32


NUM_MATERIALS = len(Material)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with a horizontal image plane offset (``cy`` is the horizon row)."""

    height: int
    width: int
    focal: float
    cx: float
    cy: float
    cam_height: float
    yaw: float = 0.0

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World points (N, 3) → camera coordinates (Xc right, Yc down, Zc forward)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        return np.stack([c * x - s * z, self.cam_height - y, s * x + c * z], axis=1)

    def project(self, pc: np.ndarray) -> np.ndarray:
        """Camera points (N, 3) with Zc > 0 → pixel coordinates (N, 2)."""
        return np.stack(
            [self.cx + self.focal * pc[:, 0] / pc[:, 2], self.cy + self.focal * pc[:, 1] / pc[:, 2]], axis=1
        )

    def plane(self, normal: tuple[float, float, float], d: float) -> tuple[float, float, float]:
        """Inverse-depth coefficients (a, b, c) of the world plane ``normal · P = d`` (0s if degenerate)."""
        nx, ny, nz = normal
        denom = d - ny * self.cam_height
        if abs(denom) < 1e-9:
            return 0.0, 0.0, 0.0
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return (nx * c - nz * s) / denom, -ny / denom, (nx * s + nz * c) / denom

    def faces_camera(self, normal: tuple[float, float, float], d: float) -> bool:
        """Whether the camera is on the side of the plane its normal points to."""
        return normal[1] * self.cam_height - d > 0


def _clip_near(pc: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman clip of a camera-space polygon against ``Zc >= near``."""
    inside = pc[:, 2] >= _NEAR
    if inside.all():
        return pc
    if not inside.any():
        return pc[:0]
    out = []
    n = len(pc)
    for i in range(n):
        a, b = pc[i], pc[(i + 1) % n]
        ia, ib = inside[i], inside[(i + 1) % n]
        if ia:
            out.append(a)
        if ia != ib:
            t = (_NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else pc[:0]


@functools.cache
def _unit_circle(segments: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, segments, endpoint=False)
    pts = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], axis=1)
    pts.setflags(write=False)
    return pts


class Canvas:
    """Collects surfaces and rasterises world-space polygons into a surface-id map.

    Surface 0 is the sky. ``shadow`` is a separate 8-bit mask of cast shadows on the ground.
    """

    def __init__(self, camera: Camera):
        self.camera = camera
        self.ids = np.zeros((camera.height, camera.width), np.uint16)
        self.shadow = np.zeros((camera.height, camera.width), np.uint8)
        self._rows: list[tuple] = []
        self.lights: list[tuple[float, float, float, int]] = []
        self._next_instance = 1
        c, s = math.cos(camera.yaw), math.sin(camera.yaw)
        self._rot_t = np.array([[c, 0.0, s], [0.0, -1.0, 0.0], [-s, 0.0, c]])  # world -> camera, transposed
        self._offset = np.array([0.0, camera.cam_height, 0.0])
        self._principal = np.array([camera.cx, camera.cy])
        self._limit = ((camera.width + 1) << _SHIFT, (camera.height + 1) << _SHIFT)
        self.surface(LabelId.SKY, Material.SKY, normal=(0.0, 0.0, 0.0), d=0.0)

    def pixels(self, size: float, z: float) -> float:
        """On-screen size in pixels of ``size`` metres at depth ``z`` (for level of detail)."""
        return self.camera.focal * size / max(z, _NEAR)

    def new_instance(self) -> int:
        """A fresh instance id (for countable objects)."""
        self._next_instance += 1
        return self._next_instance - 1

    def surface(
        self,
        label: int,
        material: int,
        *,
        normal: tuple[float, float, float],
        d: float,
        variant: float = 0.0,
        instance: int = 0,
        params: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        lane_mark: bool = False,
    ) -> int:
        """Add one surface on the world plane ``normal · P = d`` and return its id."""
        if len(self._rows) >= 65535:
            raise RuntimeError("too many surfaces in one scene")
        coeffs = self.camera.plane(normal, d)
        self._rows.append(
            (
                int(label),
                int(material),
                float(variant),
                int(instance),
                bool(lane_mark),
                coeffs,
                tuple(normal),
                tuple(params),
            )
        )
        return len(self._rows) - 1

    def polygon(self, pts: np.ndarray, sid: int, target: np.ndarray | None = None) -> bool:
        """Fill a convex world-space polygon (N, 3) with ``sid``; returns whether anything was in view."""
        return self._fill(np.asarray(pts, dtype=np.float64) @ self._rot_t + self._offset, sid, target)

    def _fill(self, pc: np.ndarray, sid: int, target: np.ndarray | None = None) -> bool:
        """Fill a convex polygon given in camera coordinates (N, 3)."""
        z = pc[:, 2]
        if z.min() < _NEAR:
            pc = _clip_near(pc)
            if len(pc) < 3:
                return False
            z = pc[:, 2]
        px = pc[:, :2] * (self.camera.focal / z)[:, None] + self._principal
        fixed = np.rint(px * (1 << _SHIFT)).astype(np.int32)  # |px| < 2**26 for any world point in range
        x, y, w, h = cv2.boundingRect(fixed)
        if x > self._limit[0] or y > self._limit[1] or x + w < 0 or y + h < 0:
            return False
        cv2.fillConvexPoly(self.ids if target is None else target, fixed, int(sid), cv2.LINE_8, _SHIFT)
        return True

    def ground(self, xz: np.ndarray, sid: int, target: np.ndarray | None = None) -> bool:
        """Fill a convex polygon on the ground given by its (X, Z) corners."""
        xz = np.asarray(xz, dtype=np.float64)
        return self.polygon(np.stack([xz[:, 0], np.zeros(len(xz)), xz[:, 1]], axis=1), sid, target)

    def ground_surface(
        self,
        label: int,
        material: int,
        variant: float = 0.0,
        *,
        params: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        lane_mark: bool = False,
        instance: int = 0,
    ) -> int:
        """A surface on the ground plane Y = 0."""
        return self.surface(
            label,
            material,
            normal=(0.0, 1.0, 0.0),
            d=0.0,
            variant=variant,
            params=params,
            lane_mark=lane_mark,
            instance=instance,
        )

    def box(
        self,
        x0: float,
        x1: float,
        y0: float,
        y1: float,
        z0: float,
        z1: float,
        label: int,
        material: int,
        variant: float = 0.0,
        instance: int = 0,
        params: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    ) -> dict[str, int]:
        """Draw the faces of an axis-aligned box that face the camera; returns face name → surface id."""
        corners = np.array(
            [
                (x0, y0, z0),
                (x0, y0, z1),
                (x0, y1, z1),
                (x0, y1, z0),
                (x1, y0, z0),
                (x1, y0, z1),
                (x1, y1, z1),
                (x1, y1, z0),
            ]
        )
        pc = corners @ self._rot_t + self._offset
        drawn: dict[str, int] = {}
        for name, normal, d, index in (
            ("left", (-1.0, 0.0, 0.0), -x0, [0, 1, 2, 3]),
            ("right", (1.0, 0.0, 0.0), x1, [4, 5, 6, 7]),
            ("top", (0.0, 1.0, 0.0), y1, [3, 7, 6, 2]),
            ("front", (0.0, 0.0, -1.0), -z0, [0, 4, 7, 3]),
            ("back", (0.0, 0.0, 1.0), z1, [1, 5, 6, 2]),
        ):
            if not self.camera.faces_camera(normal, d):
                continue
            sid = self.surface(
                label, material, normal=normal, d=d, variant=variant, instance=instance, params=params
            )
            if self._fill(pc[index], sid):
                drawn[name] = sid
        return drawn

    def frontal(
        self,
        z: float,
        label: int,
        material: int,
        variant: float = 0.0,
        instance: int = 0,
        params: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    ) -> int:
        """A surface on the plane Z = z facing the camera (people, bikes, signs, tree crowns)."""
        return self.surface(
            label, material, normal=(0.0, 0.0, -1.0), d=-z, variant=variant, instance=instance, params=params
        )

    def quad_xy(self, z: float, corners: list[tuple[float, float]], sid: int) -> bool:
        """Fill a convex polygon given by (X, Y) corners on the plane Z = z."""
        pts = np.array([(x, y, z) for x, y in corners], dtype=np.float64)
        return self.polygon(pts, sid)

    def ellipse_xy(
        self, z: float, cx: float, cy: float, rx: float, ry: float, sid: int, segments: int = 14
    ) -> bool:
        """Fill an ellipse on the plane Z = z."""
        pts = _unit_circle(segments) * (rx, ry, 0.0) + (cx, cy, z)
        return self.polygon(pts, sid)

    def bar_xy(
        self, z: float, p: tuple[float, float], q: tuple[float, float], width: float, sid: int
    ) -> bool:
        """Fill a straight bar of ``width`` metres from p to q on the plane Z = z."""
        dx, dy = q[0] - p[0], q[1] - p[1]
        n = math.hypot(dx, dy) or 1.0
        ox, oy = -dy / n * width / 2, dx / n * width / 2
        return self.quad_xy(
            z,
            [(p[0] + ox, p[1] + oy), (q[0] + ox, q[1] + oy), (q[0] - ox, q[1] - oy), (p[0] - ox, p[1] - oy)],
            sid,
        )

    def ring_xy(
        self, z: float, cx: float, cy: float, r: float, width: float, sid: int, segments: int = 12
    ) -> None:
        """Draw a ring (a wheel) on the plane Z = z as short bars."""
        t = np.linspace(0.0, 2.0 * math.pi, segments + 1)
        for a, b in zip(t[:-1], t[1:], strict=True):
            self.bar_xy(
                z,
                (cx + r * math.cos(a), cy + r * math.sin(a)),
                (cx + r * math.cos(b), cy + r * math.sin(b)),
                width,
                sid,
            )

    def add_light(self, x: float, y: float, z: float, kind: int) -> None:
        """Remember a light source (world position; kind 0 street lamp, 1 headlight) for night renders."""
        self.lights.append((x, y, z, kind))

    def table(self) -> SurfaceTable:
        """The surfaces as a struct of numpy arrays."""
        rows = self._rows
        return SurfaceTable(
            label=np.array([r[0] for r in rows], np.uint8),
            material=np.array([r[1] for r in rows], np.uint8),
            variant=np.array([r[2] for r in rows], np.float32),
            instance=np.array([r[3] for r in rows], np.uint16),
            lane_mark=np.array([r[4] for r in rows], bool),
            coeffs=np.array([r[5] for r in rows], np.float64),
            normal=np.array([r[6] for r in rows], np.float32),
            params=np.array([r[7] for r in rows], np.float32),
        )


@dataclass(frozen=True)
class SurfaceTable:
    """Per-surface attributes, indexed by the ids in a scene's surface map."""

    label: np.ndarray  # uint8 Cityscapes labelId
    material: np.ndarray  # uint8 Material
    variant: np.ndarray  # float32 in [0, 1)
    instance: np.ndarray  # uint16, 0 = none
    lane_mark: np.ndarray  # bool: painted marking (SYNTHIA labels these 'lanemarking')
    coeffs: np.ndarray  # (n, 3) inverse-depth plane coefficients
    normal: np.ndarray  # (n, 3) world normal
    params: np.ndarray  # (n, 4) material parameters
