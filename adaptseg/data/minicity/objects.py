"""Street furniture, vegetation, vehicles and people for MiniCity scenes.

Each function draws one object into a :class:`~adaptseg.data.minicity.geometry.Canvas` from world
coordinates (metres), drawing its parts far to near so that the painter's algorithm gets the
object's own occlusions right. Sizes follow real objects (a car is 4.3 m long, a person 1.75 m tall).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from adaptseg.data.minicity.geometry import Canvas, LabelId, Material

Rng = np.random.Generator

# --- shadows --------------------------------------------------------------------------------------


def cast_shadow(
    cv: Canvas, sun: np.ndarray, x0: float, x1: float, z0: float, z1: float, height: float
) -> None:
    """Mark the ground shadow of a box (footprint and its top moved along the sun's rays)."""
    if sun[1] <= 0.05 or height <= 0 or min(z0, z1) > 80.0:  # far shadows are a pixel or less
        return
    dx, dz = -sun[0] / sun[1] * height, -sun[2] / sun[1] * height
    foot = [(x0, z0), (x1, z0), (x1, z1), (x0, z1)]
    pts = np.array(foot + [(x + dx, z + dz) for x, z in foot], dtype=np.float32)
    hull = cv2.convexHull(pts)[:, 0, :]
    cv.ground(hull, 255, target=cv.shadow)


# --- vegetation, walls, fences, void objects ----------------------------------------------------


def tree(cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray, *, scale: float = 1.0) -> None:
    """A tree: a trunk and a crown of overlapping ellipses (all vegetation)."""
    inst_var = rng.random()
    trunk_h = rng.uniform(1.8, 3.2) * scale
    trunk_w = rng.uniform(0.22, 0.4) * scale
    crown_r = rng.uniform(1.4, 3.0) * scale
    crown_y = trunk_h + crown_r * rng.uniform(0.6, 0.9)
    cast_shadow(cv, sun, x - crown_r * 0.8, x + crown_r * 0.8, z - crown_r * 0.5, z + crown_r * 0.5, crown_y)
    cv.box(
        x - trunk_w / 2,
        x + trunk_w / 2,
        0.0,
        crown_y,
        z - trunk_w / 2,
        z + trunk_w / 2,
        LabelId.VEGETATION,
        Material.TRUNK,
        rng.random(),
    )
    sid = cv.frontal(z - 0.1, LabelId.VEGETATION, Material.FOLIAGE, inst_var)
    pixels = cv.camera.focal * crown_r / max(z, 1.0)  # crown radius on screen
    segments = 14 if pixels > 6 else 8
    for _ in range(int(rng.integers(3, 7))):
        cx = x + rng.uniform(-0.6, 0.6) * crown_r
        cy = crown_y + rng.uniform(-0.4, 0.5) * crown_r
        r = crown_r * rng.uniform(0.55, 0.85)
        cv.ellipse_xy(z - 0.1, cx, cy, r * rng.uniform(0.9, 1.2), r * rng.uniform(0.8, 1.1), sid, segments)


def hedge(cv: Canvas, rng: Rng, x0: float, x1: float, z0: float, z1: float, sun: np.ndarray) -> None:
    """A trimmed hedge (vegetation box)."""
    h = rng.uniform(0.8, 1.8)
    cast_shadow(cv, sun, x0, x1, z0, z1, h)
    cv.box(x0, x1, 0.0, h, z0, z1, LabelId.VEGETATION, Material.FOLIAGE, rng.random())


def wall(cv: Canvas, rng: Rng, x0: float, x1: float, z0: float, z1: float, sun: np.ndarray) -> None:
    """A free-standing wall along a lot line."""
    h = rng.uniform(0.8, 2.8)
    cast_shadow(cv, sun, x0, x1, z0, z1, h)
    cv.box(x0, x1, 0.0, h, z0, z1, LabelId.WALL, Material.WALL, rng.random())


def fence(cv: Canvas, rng: Rng, x0: float, x1: float, z0: float, z1: float, sun: np.ndarray) -> None:
    """A fence; the renderer draws its bars from ``params`` (post spacing, bar spacing, height, style)."""
    h = rng.uniform(1.0, 2.2)
    params = (rng.uniform(1.5, 3.0), rng.uniform(0.1, 0.25), h, float(rng.integers(0, 3)))
    cv.box(x0, x1, 0.0, h, z0, z1, LabelId.FENCE, Material.FENCE, rng.random(), params=params)


def static_object(cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray) -> None:
    """A bin, bench or advertising pillar (Cityscapes 'static', ignored in training)."""
    kind = int(rng.integers(0, 3))
    w, h, d = [(0.5, 0.95, 0.5), (1.6, 0.5, 0.5), (1.2, 2.8, 1.2)][kind]
    cast_shadow(cv, sun, x - w / 2, x + w / 2, z, z + d, h)
    cv.box(x - w / 2, x + w / 2, 0.0, h, z, z + d, LabelId.STATIC, Material.STATIC, rng.random())


# --- poles, lights and signs ----------------------------------------------------------------------


def pole(cv: Canvas, rng: Rng, x: float, z: float, height: float, width: float, sun: np.ndarray) -> None:
    """A plain square pole (bollards, sign and light poles)."""
    cast_shadow(cv, sun, x - width / 2, x + width / 2, z - width / 2, z + width / 2, height)
    cv.box(
        x - width / 2,
        x + width / 2,
        0.0,
        height,
        z - width / 2,
        z + width / 2,
        LabelId.POLE,
        Material.POLE,
        rng.random(),
    )


def traffic_light_head(cv: Canvas, rng: Rng, x: float, y: float, z: float, facing: bool) -> None:
    """A traffic light housing with three lamps (one lit) centred at (x, y); ``facing`` the camera or not."""
    w, h, d = 0.32, 0.9, 0.25
    cv.box(
        x - w / 2,
        x + w / 2,
        y - h / 2,
        y + h / 2,
        z,
        z + d,
        LabelId.TRAFFIC_LIGHT,
        Material.TL_HOUSING,
        rng.random(),
    )
    if not facing:
        return
    inst_state = int(rng.integers(0, 3))  # 0 red, 1 amber, 2 green
    for k in range(3):
        lit = 1.0 if k == inst_state else 0.0
        sid = cv.frontal(
            z - 0.01, LabelId.TRAFFIC_LIGHT, Material.TL_LAMP, k / 6 + 0.01, params=(lit, 0, 0, 0)
        )
        cv.ellipse_xy(z - 0.01, x, y + (1 - k) * 0.28, 0.11, 0.11, sid, segments=10)
        if lit:
            cv.add_light(x, y + (1 - k) * 0.28, z, 3 + k)


def traffic_sign(cv: Canvas, rng: Rng, x: float, y: float, z: float, facing: bool) -> None:
    """A sign plate centred at (x, y): circle, triangle, square or diamond; its back if not ``facing``."""
    size = rng.uniform(0.55, 0.8)
    shape = int(rng.integers(0, 4))
    material = Material.SIGN if facing else Material.SIGN_BACK
    r = size / 2
    sid = cv.frontal(z, LabelId.TRAFFIC_SIGN, material, rng.random(), params=(x, y, r, float(shape)))
    if shape == 0:
        cv.ellipse_xy(z, x, y, r, r, sid, segments=16)
    elif shape == 1:
        cv.quad_xy(z, [(x - r, y - 0.6 * r), (x + r, y - 0.6 * r), (x, y + r)], sid)
    elif shape == 2:
        cv.quad_xy(
            z, [(x - r, y - r * 0.8), (x + r, y - r * 0.8), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], sid
        )
    else:
        cv.quad_xy(z, [(x, y - r), (x + r, y), (x, y + r), (x - r, y)], sid)


def sign_pole(cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray) -> None:
    """A thin pole with one or two signs."""
    h = rng.uniform(2.3, 3.2)
    pole(cv, rng, x, z, h, 0.08, sun)
    facing = rng.random() < 0.75
    traffic_sign(cv, rng, x, h - 0.35, z - 0.06, facing)
    if rng.random() < 0.4:
        traffic_sign(cv, rng, x, h - 1.1, z - 0.06, facing)


def traffic_light_pole(
    cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray, *, arm_to: float | None = None
) -> None:
    """A traffic-light pole; with ``arm_to`` a mast arm reaches over the road to that X with a hanging light."""
    h = rng.uniform(2.8, 3.6)
    facing = rng.random() < 0.8
    if arm_to is not None:
        mast_h = rng.uniform(5.5, 6.5)
        pole(cv, rng, x, z, mast_h, 0.2, sun)
        lo, hi = min(x, arm_to), max(x, arm_to)
        cv.box(
            lo, hi, mast_h - 0.3, mast_h - 0.15, z - 0.08, z + 0.08, LabelId.POLE, Material.POLE, rng.random()
        )
        traffic_light_head(cv, rng, arm_to, mast_h - 0.8, z - 0.15, True)
        traffic_light_head(cv, rng, x, h - 0.1, z - 0.25, facing)
        return
    pole(cv, rng, x, z, h + 0.3, 0.14, sun)
    traffic_light_head(cv, rng, x, h, z - 0.2, facing)
    if rng.random() < 0.3:
        traffic_sign(cv, rng, x, h - 1.0, z - 0.1, True)


def street_lamp(cv: Canvas, rng: Rng, x: float, z: float, toward: float, sun: np.ndarray) -> None:
    """A street lamp: a tall pole, an arm reaching over the road (direction ``toward`` = ±1) and a lamp head."""
    h = rng.uniform(6.5, 9.0)
    pole(cv, rng, x, z, h, 0.18, sun)
    arm = rng.uniform(1.2, 2.5)
    ax = x + toward * arm
    lo, hi = min(x, ax), max(x, ax)
    cv.box(lo, hi, h - 0.12, h, z - 0.06, z + 0.06, LabelId.POLE, Material.POLE, rng.random())
    hx0, hx1 = min(ax, ax + toward * 0.6), max(ax, ax + toward * 0.6)
    cv.box(hx0, hx1, h - 0.3, h - 0.05, z - 0.15, z + 0.15, LabelId.POLE, Material.LAMP, rng.random())
    cv.add_light((hx0 + hx1) / 2, h - 0.3, z, 0)


# --- vehicles --------------------------------------------------------------------------------------


def _wheel_disc(
    cv: Canvas, label: int, instance: int, side_x: float, y: float, z: float, r: float, outward: float
) -> None:
    """A wheel seen from the side, on the plane X = side_x (outward = -1 for a left face, +1 for right)."""
    normal = (outward, 0.0, 0.0)
    if not cv.camera.faces_camera(normal, outward * side_x):
        return
    sid = cv.surface(label, Material.TIRE, normal=normal, d=outward * side_x, variant=0.5, instance=instance)
    t = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    pts = np.stack([np.full_like(t, side_x), y + r * np.sin(t), z + r * np.cos(t)], axis=1)
    cv.polygon(pts, sid)


def _end_lights(
    cv: Canvas, label: int, instance: int, x0: float, x1: float, zf: float, y0: float, y1: float, front: bool
) -> None:
    """Head- or taillights on the end face at Z = zf of a vehicle spanning x0..x1."""
    material = Material.HEADLIGHT if front else Material.TAILLIGHT
    w = min(0.3, (x1 - x0) * 0.16)
    for lo in (x0 + 0.08, x1 - 0.08 - w):
        sid = cv.frontal(zf - 0.02, label, material, 0.5, instance)
        cv.quad_xy(zf - 0.02, [(lo, y0), (lo + w, y0), (lo + w, y1), (lo, y1)], sid)
    cv.add_light((x0 + x1) / 2, (y0 + y1) / 2, zf, 1 if front else 2)


def car(cv: Canvas, rng: Rng, x: float, z: float, heading: int, sun: np.ndarray) -> None:
    """A car (or van) driving along the road; ``heading`` +1 shows its rear, -1 its front.

    ``z`` is the near end of the car.
    """
    van = rng.random() < 0.12
    length = rng.uniform(4.6, 5.4) if van else rng.uniform(3.8, 4.9)
    width = rng.uniform(1.7, 1.95)
    body_top = rng.uniform(0.85, 1.0)
    height = rng.uniform(1.85, 2.2) if van else rng.uniform(1.38, 1.55)
    inst = cv.new_instance()
    variant = rng.random()
    x0, x1, z0, z1 = x - width / 2, x + width / 2, z, z + length
    cast_shadow(cv, sun, x0, x1, z0, z1, height * 0.7)
    r = 0.31
    detail = cv.pixels(height, z0) > 7  # wheels and lamps only where they are a few pixels big
    if detail:
        for az in (z0 + 0.85, z1 - 0.85):
            for wx0, wx1 in ((x0 + 0.02, x0 + 0.25), (x1 - 0.25, x1 - 0.02)):
                cv.box(wx0, wx1, 0.0, 2 * r, az - r, az + r, LabelId.CAR, Material.TIRE, 0.5, inst)
    cv.box(
        x0, x1, 0.0 if not detail else 0.28, body_top, z0, z1, LabelId.CAR, Material.CAR_PAINT, variant, inst
    )
    if van:
        c0, c1 = z0, z1
    elif heading > 0:
        c0, c1 = z0 + 0.3 * length, z1 - 0.22 * length
    else:
        c0, c1 = z0 + 0.22 * length, z1 - 0.3 * length
    inset = width * 0.07
    faces = cv.box(
        x0 + inset, x1 - inset, body_top, height, c0, c1, LabelId.CAR, Material.GLASS, variant, inst
    )
    if "top" in faces:  # the roof is painted, not glass
        roof = cv.surface(
            LabelId.CAR, Material.CAR_PAINT, normal=(0.0, 1.0, 0.0), d=height, variant=variant, instance=inst
        )
        cv.polygon(
            np.array(
                [
                    (x0 + inset, height, c0),
                    (x1 - inset, height, c0),
                    (x1 - inset, height, c1),
                    (x0 + inset, height, c1),
                ]
            ),
            roof,
        )
    if detail:
        for az in (z0 + 0.85, z1 - 0.85):
            _wheel_disc(cv, LabelId.CAR, inst, x0 - 0.01, r, az, r, -1.0)
            _wheel_disc(cv, LabelId.CAR, inst, x1 + 0.01, r, az, r, 1.0)
    _end_lights(cv, LabelId.CAR, inst, x0, x1, z0, body_top - 0.28, body_top - 0.1, front=heading < 0)


def crossing_car(cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray) -> None:
    """A car seen from the side, driving across the view (length along X); ``x`` is its centre."""
    length = rng.uniform(3.8, 4.9)
    width = rng.uniform(1.7, 1.95)
    body_top = rng.uniform(0.85, 1.0)
    height = rng.uniform(1.38, 1.55)
    inst = cv.new_instance()
    variant = rng.random()
    x0, x1, z0, z1 = x - length / 2, x + length / 2, z, z + width
    cast_shadow(cv, sun, x0, x1, z0, z1, height * 0.7)
    cv.box(x0, x1, 0.28, body_top, z0, z1, LabelId.CAR, Material.CAR_PAINT, variant, inst)
    cv.box(
        x0 + 0.25 * length,
        x1 - 0.25 * length,
        body_top,
        height,
        z0 + 0.12,
        z1 - 0.12,
        LabelId.CAR,
        Material.GLASS,
        variant,
        inst,
    )
    sid = cv.frontal(z0 - 0.01, LabelId.CAR, Material.TIRE, 0.5, inst)
    for ax in (x0 + 0.85, x1 - 0.85):
        cv.ellipse_xy(z0 - 0.01, ax, 0.31, 0.31, 0.31, sid, segments=12)


def truck(cv: Canvas, rng: Rng, x: float, z: float, heading: int, sun: np.ndarray) -> None:
    """A lorry: a cab and a taller cargo box; ``heading`` +1 shows the cargo doors, -1 the cab."""
    width = rng.uniform(2.35, 2.55)
    cab_len, cargo_len = rng.uniform(1.9, 2.4), rng.uniform(4.5, 8.0)
    cab_h, cargo_h = rng.uniform(2.6, 3.1), rng.uniform(3.0, 3.8)
    inst = cv.new_instance()
    x0, x1 = x - width / 2, x + width / 2
    length = cab_len + cargo_len + 0.3
    cast_shadow(cv, sun, x0, x1, z, z + length, cargo_h * 0.8)
    r = 0.5
    for az in (z + 1.0, z + length - 1.2):
        for wx0, wx1 in ((x0 + 0.02, x0 + 0.35), (x1 - 0.35, x1 - 0.02)):
            cv.box(wx0, wx1, 0.0, 2 * r, az - r, az + r, LabelId.TRUCK, Material.TIRE, 0.5, inst)
    cab_var, cargo_var = rng.random(), rng.random()
    if heading > 0:
        cv.box(
            x0 + 0.05,
            x1 - 0.05,
            0.5,
            cab_h,
            z + cargo_len + 0.3,
            z + length,
            LabelId.TRUCK,
            Material.TRUCK_PAINT,
            cab_var,
            inst,
        )
        cv.box(x0, x1, 0.55, cargo_h, z, z + cargo_len, LabelId.TRUCK, Material.TRUCK_PAINT, cargo_var, inst)
        _end_lights(cv, LabelId.TRUCK, inst, x0, x1, z, 0.6, 0.8, front=False)
    else:
        cv.box(
            x0,
            x1,
            0.55,
            cargo_h,
            z + cab_len + 0.3,
            z + length,
            LabelId.TRUCK,
            Material.TRUCK_PAINT,
            cargo_var,
            inst,
        )
        cv.box(
            x0 + 0.05,
            x1 - 0.05,
            0.5,
            cab_h,
            z,
            z + cab_len,
            LabelId.TRUCK,
            Material.TRUCK_PAINT,
            cab_var,
            inst,
        )
        sid = cv.frontal(z - 0.01, LabelId.TRUCK, Material.GLASS, cab_var, inst)
        cv.quad_xy(
            z - 0.01,
            [
                (x0 + 0.2, cab_h * 0.55),
                (x1 - 0.2, cab_h * 0.55),
                (x1 - 0.2, cab_h - 0.2),
                (x0 + 0.2, cab_h - 0.2),
            ],
            sid,
        )
        _end_lights(cv, LabelId.TRUCK, inst, x0, x1, z, 0.7, 0.9, front=True)
    for az in (z + 1.0, z + length - 1.2):
        _wheel_disc(cv, LabelId.TRUCK, inst, x0 - 0.01, r, az, r, -1.0)
        _wheel_disc(cv, LabelId.TRUCK, inst, x1 + 0.01, r, az, r, 1.0)


def _long_vehicle(
    cv: Canvas,
    rng: Rng,
    x: float,
    z: float,
    heading: int,
    sun: np.ndarray,
    *,
    label: int,
    material: int,
    length: float,
    width: float,
    height: float,
    floor: float,
    wheel_r: float,
) -> int:
    """A bus or tram body with a band of side windows (drawn by the renderer from ``params``)."""
    inst = cv.new_instance()
    x0, x1 = x - width / 2, x + width / 2
    cast_shadow(cv, sun, x0, x1, z, z + length, height * 0.8)
    for az in (z + 2.0, z + length - 2.5):
        for wx0, wx1 in ((x0 + 0.02, x0 + 0.3), (x1 - 0.3, x1 - 0.02)):
            cv.box(wx0, wx1, 0.0, 2 * wheel_r, az - wheel_r, az + wheel_r, label, Material.TIRE, 0.5, inst)
    band = (height * 0.36, height * 0.86, rng.uniform(1.2, 1.8), 0.0)
    cv.box(x0, x1, floor, height, z, z + length, label, material, rng.random(), inst, params=band)
    for az in (z + 2.0, z + length - 2.5):
        _wheel_disc(cv, label, inst, x0 - 0.01, wheel_r, az, wheel_r, -1.0)
        _wheel_disc(cv, label, inst, x1 + 0.01, wheel_r, az, wheel_r, 1.0)
    _end_lights(cv, label, inst, x0, x1, z, 0.5, 0.75, front=heading < 0)
    return inst


def bus(cv: Canvas, rng: Rng, x: float, z: float, heading: int, sun: np.ndarray) -> None:
    """A city bus (12 m)."""
    _long_vehicle(
        cv,
        rng,
        x,
        z,
        heading,
        sun,
        label=LabelId.BUS,
        material=Material.BUS_PAINT,
        length=rng.uniform(10.5, 13.0),
        width=2.55,
        height=rng.uniform(2.95, 3.25),
        floor=0.3,
        wheel_r=0.5,
    )


def tram(cv: Canvas, rng: Rng, x: float, z: float, heading: int, sun: np.ndarray) -> None:
    """A tram (Cityscapes 'train') with a pantograph on its roof."""
    height = rng.uniform(3.3, 3.6)
    length = rng.uniform(22.0, 32.0)
    inst = _long_vehicle(
        cv,
        rng,
        x,
        z,
        heading,
        sun,
        label=LabelId.TRAIN,
        material=Material.TRAM_PAINT,
        length=length,
        width=2.4,
        height=height,
        floor=0.25,
        wheel_r=0.35,
    )
    pz = z + length * rng.uniform(0.3, 0.6)
    sid = cv.frontal(pz, LabelId.TRAIN, Material.POLE, 0.3, inst)
    cv.bar_xy(pz, (x - 0.5, height), (x, height + 0.9), 0.06, sid)
    cv.bar_xy(pz, (x, height + 0.9), (x + 0.5, height + 0.4), 0.06, sid)


# --- people and two-wheelers ---------------------------------------------------------------------


def person(
    cv: Canvas,
    rng: Rng,
    x: float,
    z: float,
    sun: np.ndarray,
    *,
    label: int = LabelId.PERSON,
    height: float | None = None,
) -> None:
    """A pedestrian seen from the front or back on the plane Z = z (legs, torso, arms, head)."""
    h = (
        height
        if height is not None
        else (rng.uniform(1.0, 1.35) if rng.random() < 0.08 else rng.uniform(1.55, 1.92))
    )
    inst = cv.new_instance()
    cast_shadow(cv, sun, x - 0.18 * h, x + 0.18 * h, z - 0.1, z + 0.1, h)
    top, bottom, skin, hair = rng.random(), rng.random(), rng.random(), rng.random()
    legs = cv.frontal(z, label, Material.CLOTHES, bottom, inst)
    stride = rng.uniform(0.0, 0.13) * h
    hip = 0.48 * h
    if cv.pixels(h, z) < 8:  # a few pixels tall: a silhouette is enough
        cv.quad_xy(
            z,
            [
                (x - 0.07 * h - stride / 2, 0.0),
                (x + 0.07 * h + stride / 2, 0.0),
                (x + 0.1 * h, hip),
                (x - 0.1 * h, hip),
            ],
            legs,
        )
        torso = cv.frontal(z - 0.01, label, Material.CLOTHES, top, inst)
        cv.quad_xy(
            z - 0.01,
            [(x - 0.12 * h, hip), (x + 0.12 * h, hip), (x + 0.13 * h, 0.82 * h), (x - 0.13 * h, 0.82 * h)],
            torso,
        )
        head = cv.frontal(z - 0.01, label, Material.HAIR if rng.random() < 0.5 else Material.SKIN, hair, inst)
        cv.ellipse_xy(z - 0.01, x, 0.905 * h, 0.06 * h, 0.07 * h, head, segments=8)
        return
    cv.bar_xy(z, (x - 0.045 * h, hip), (x - 0.045 * h - stride, 0.0), 0.085 * h, legs)
    cv.bar_xy(z, (x + 0.045 * h, hip), (x + 0.045 * h + stride * rng.uniform(0.3, 1.0), 0.0), 0.085 * h, legs)
    torso = cv.frontal(z - 0.01, label, Material.CLOTHES, top, inst)
    coat = rng.uniform(0.0, 0.12) * h
    cv.quad_xy(
        z - 0.01,
        [
            (x - 0.11 * h, hip - coat),
            (x + 0.11 * h, hip - coat),
            (x + 0.125 * h, 0.8 * h),
            (x - 0.125 * h, 0.8 * h),
        ],
        torso,
    )
    swing = rng.uniform(-0.05, 0.05) * h
    cv.bar_xy(z - 0.02, (x - 0.135 * h, 0.79 * h), (x - 0.16 * h + swing, 0.5 * h), 0.06 * h, torso)
    cv.bar_xy(z - 0.02, (x + 0.135 * h, 0.79 * h), (x + 0.16 * h - swing, 0.5 * h), 0.06 * h, torso)
    face = rng.random() < 0.55
    head_y = 0.905 * h
    hair_sid = cv.frontal(z - 0.01, label, Material.HAIR, hair, inst)
    cv.ellipse_xy(z - 0.01, x, head_y + 0.01 * h, 0.06 * h, 0.07 * h, hair_sid, segments=12)
    if face:
        skin_sid = cv.frontal(z - 0.02, label, Material.SKIN, skin, inst)
        cv.ellipse_xy(z - 0.02, x, head_y - 0.012 * h, 0.05 * h, 0.058 * h, skin_sid, segments=12)


def _rider_body(cv: Canvas, rng: Rng, x: float, z: float, seat: float, lean: float, inst: int) -> None:
    """A seated rider's torso, arms and head (rider label) above a seat at height ``seat``."""
    top, hair = rng.random(), rng.random()
    torso = cv.frontal(z, LabelId.RIDER, Material.CLOTHES, top, inst)
    shoulder = seat + 0.55
    cv.quad_xy(
        z, [(x - 0.17, seat), (x + 0.17, seat), (x + 0.2 + lean, shoulder), (x - 0.2 + lean, shoulder)], torso
    )
    cv.bar_xy(z - 0.01, (x - 0.2 + lean, shoulder - 0.03), (x - 0.28, seat + 0.15), 0.09, torso)
    cv.bar_xy(z - 0.01, (x + 0.2 + lean, shoulder - 0.03), (x + 0.28, seat + 0.15), 0.09, torso)
    head = cv.frontal(z - 0.01, LabelId.RIDER, Material.HAIR, hair, inst)
    cv.ellipse_xy(z - 0.01, x + lean, shoulder + 0.14, 0.11, 0.13, head, segments=12)


def cyclist_rear(cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray, *, motor: bool) -> None:
    """A bicycle or motorcycle with its rider, seen from behind (riding away)."""
    bike_label = LabelId.MOTORCYCLE if motor else LabelId.BICYCLE
    inst_bike = cv.new_instance()
    inst_rider = cv.new_instance()
    cast_shadow(cv, sun, x - 0.3, x + 0.3, z, z + 1.8, 1.5)
    bike = cv.frontal(z + 0.05, bike_label, Material.BIKE, rng.random(), inst_bike)
    legs = cv.frontal(z + 0.02, LabelId.RIDER, Material.CLOTHES, rng.random(), inst_rider)
    if motor:
        cv.quad_xy(z + 0.05, [(x - 0.08, 0.0), (x + 0.08, 0.0), (x + 0.08, 0.62), (x - 0.08, 0.62)], bike)
        cv.quad_xy(z + 0.05, [(x - 0.3, 0.35), (x + 0.3, 0.35), (x + 0.26, 0.9), (x - 0.26, 0.9)], bike)
        cv.bar_xy(z + 0.05, (x - 0.42, 1.05), (x + 0.42, 1.05), 0.06, bike)
        seat = 0.88
        cv.bar_xy(z + 0.02, (x - 0.16, seat), (x - 0.3, 0.35), 0.13, legs)
        cv.bar_xy(z + 0.02, (x + 0.16, seat), (x + 0.3, 0.35), 0.13, legs)
        _end_lights(cv, bike_label, inst_bike, x - 0.22, x + 0.22, z - 0.05, 0.7, 0.8, front=False)
    else:
        cv.quad_xy(z + 0.05, [(x - 0.025, 0.0), (x + 0.025, 0.0), (x + 0.025, 0.68), (x - 0.025, 0.68)], bike)
        cv.bar_xy(z + 0.05, (x, 0.6), (x, 0.95), 0.05, bike)
        cv.bar_xy(z + 0.05, (x - 0.3, 1.02), (x + 0.3, 1.02), 0.04, bike)
        seat = 0.95
        cv.bar_xy(z + 0.02, (x - 0.12, seat), (x - 0.1, 0.3), 0.11, legs)
        cv.bar_xy(z + 0.02, (x + 0.12, seat), (x + 0.1, 0.45), 0.11, legs)
    _rider_body(cv, rng, x, z, seat, rng.uniform(-0.04, 0.04), inst_rider)


def bike_side(
    cv: Canvas, rng: Rng, x: float, z: float, sun: np.ndarray, *, motor: bool, rider: bool, direction: int
) -> None:
    """A bicycle or motorcycle seen from the side on the plane Z = z, optionally ridden."""
    bike_label = LabelId.MOTORCYCLE if motor else LabelId.BICYCLE
    inst = cv.new_instance()
    d = direction
    cast_shadow(cv, sun, x - 0.9, x + 0.9, z - 0.2, z + 0.2, 1.6 if rider else 1.0)
    variant = rng.random()
    bike = cv.frontal(z, bike_label, Material.BIKE, variant, inst)
    if motor:
        tire = cv.frontal(z, bike_label, Material.TIRE, 0.5, inst)
        for wx in (x - 0.7, x + 0.7):
            cv.ellipse_xy(z, wx, 0.31, 0.31, 0.31, tire, segments=12)
        cv.quad_xy(
            z - 0.01,
            [(x - 0.6 * d, 0.45), (x + 0.5 * d, 0.4), (x + 0.45 * d, 0.95), (x - 0.5 * d, 0.85)],
            bike,
        )
        cv.bar_xy(z - 0.01, (x + 0.5 * d, 0.95), (x + 0.7 * d, 0.31), 0.07, bike)
        seat, hand = 0.85, (x + 0.5 * d, 1.05)
    else:
        r = 0.34
        segments = 12 if cv.pixels(r, z) > 4 else 6
        rear, front = (x - 0.52 * d, r), (x + 0.52 * d, r)
        pedal, saddle, head = (x, 0.3), (x - 0.15 * d, 0.9), (x + 0.38 * d, 0.95)
        cv.ring_xy(z, rear[0], r, r, 0.06, bike, segments)
        cv.ring_xy(z, front[0], r, r, 0.06, bike, segments)
        for p, q in (
            (rear, pedal),
            (pedal, saddle),
            (pedal, head),
            (saddle, head),
            (head, front),
            (rear, saddle),
        ):
            cv.bar_xy(z - 0.01, p, q, 0.05, bike)
        cv.bar_xy(z - 0.01, head, (head[0] + 0.05 * d, 1.08), 0.05, bike)
        seat, hand = 0.95, (head[0] + 0.05 * d, 1.06)
    if not rider:
        return
    inst_r = cv.new_instance()
    legs = cv.frontal(z - 0.02, LabelId.RIDER, Material.CLOTHES, rng.random(), inst_r)
    hip = (x - 0.15 * d, seat + 0.05)
    knee = (x + 0.15 * d, seat - 0.1)
    cv.bar_xy(z - 0.02, hip, knee, 0.14, legs)
    cv.bar_xy(z - 0.02, knee, (x + 0.05 * d, 0.3), 0.11, legs)
    torso = cv.frontal(z - 0.03, LabelId.RIDER, Material.CLOTHES, rng.random(), inst_r)
    shoulder = (x + 0.05 * d, seat + 0.6)
    cv.bar_xy(z - 0.03, hip, shoulder, 0.3, torso)
    cv.bar_xy(z - 0.04, shoulder, hand, 0.09, torso)
    head = cv.frontal(z - 0.03, LabelId.RIDER, Material.HAIR, rng.random(), inst_r)
    cv.ellipse_xy(z - 0.03, shoulder[0] + 0.06 * d, shoulder[1] + 0.17, 0.11, 0.13, head, segments=12)
