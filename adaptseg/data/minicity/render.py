"""Appearance: turn a :class:`~adaptseg.data.minicity.scene.Scene` into an RGB image in a domain's style.

The pipeline per image: per-surface colour (palette entry picked by the surface's variant, brightness
jitter) and flat Lambert shading from the sun; procedural detail in world coordinates (windows on
facades and buses, paving joints, fence bars, sign borders); world-space texture; cast shadows on the
ground; sky gradient and clouds; then an optional adverse condition — fog (Koschmieder haze with
β ≈ 0.03), rain (wet ground, streaks), snow (cover on the ground and roofs, flakes), night (its own
lighting: lamps with light pools, lit windows, head- and taillights, glare, a dark noisy sensor) —
and finally the camera: exposure, white balance, saturation, gamma, vignetting, blur and noise.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from adaptseg.data.minicity.geometry import Material
from adaptseg.data.minicity.scene import Scene
from adaptseg.data.minicity.styles import PALETTE_SIZE, Style

CONDITIONS = ("fog", "night", "rain", "snow")

_GROUND_MATERIALS = (
    Material.GROUND,
    Material.ROAD,
    Material.PAINT,
    Material.SIDEWALK,
    Material.CURB,
    Material.TERRAIN,
    Material.RAIL,
)
_TEX = 256


@functools.cache
def _texture_bank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three seamless noise textures (fine, medium, coarse), zero mean and unit spread, fixed forever."""
    rng = np.random.default_rng(0x6D696E69)
    freq = np.fft.fftfreq(_TEX)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    out = []
    for cutoff in (0.35, 0.08, 0.02):
        spectrum = np.fft.fft2(rng.standard_normal((_TEX, _TEX))) * np.exp(-((radius / cutoff) ** 2))
        tex = np.real(np.fft.ifft2(spectrum))
        tex = (tex - tex.mean()) / (tex.std() + 1e-9)
        out.append(np.clip(tex, -3, 3).astype(np.float32))
    return out[0], out[1], out[2]


def _hash01(*values: np.ndarray) -> np.ndarray:
    """A deterministic per-element hash of integer arrays into [0, 1)."""
    h = np.zeros(values[0].shape, np.uint64)
    for k, v in enumerate(values):
        h ^= (v.astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B9 + k)) * np.uint64(0x85EBCA6B)
        h ^= h >> np.uint64(13)
        h *= np.uint64(0xC2B2AE35)
        h ^= h >> np.uint64(16)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / float(1 << 24)


class _Pixels:
    """Per-pixel geometry of a scene: depth, world position, texture coordinates."""

    def __init__(self, scene: Scene):
        cam, t, ids = scene.camera, scene.table, scene.ids
        h, w = ids.shape
        xp = ((np.arange(w, dtype=np.float32) + 0.5 - cam.cx) / cam.focal)[None, :]
        yp = ((np.arange(h, dtype=np.float32) + 0.5 - cam.cy) / cam.focal)[:, None]
        co = t.coeffs.astype(np.float32)[ids]
        inv = co[..., 0] * xp + co[..., 1] * yp + co[..., 2]
        zc = 1.0 / np.maximum(inv, 1e-3)
        c, s = math.cos(cam.yaw), math.sin(cam.yaw)
        xc = xp * zc
        self.zc = zc
        self.X = c * xc + s * zc
        self.Y = cam.cam_height - yp * zc
        self.Z = -s * xc + c * zc
        self.dist = zc * np.sqrt(1.0 + xp**2 + yp**2)
        normal = t.normal[ids]
        ground = np.abs(normal[..., 1]) > 0.5
        side = np.abs(normal[..., 0]) > 0.5
        self.u = np.where(ground, self.X, np.where(side, self.Z, self.X))
        self.v = np.where(ground, self.Z, self.Y)
        self.rows = np.broadcast_to((np.arange(h, dtype=np.float32) + 0.5)[:, None], (h, w))
        self.cols = np.broadcast_to((np.arange(w, dtype=np.float32) + 0.5)[None, :], (h, w))


def _world_texture(tex: np.ndarray, u: np.ndarray, v: np.ndarray, density: float) -> np.ndarray:
    mx = np.mod(u * density, _TEX).astype(np.float32)
    my = np.mod(v * density, _TEX).astype(np.float32)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _screen_texture(
    tex: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, scale: float = 1.0
) -> np.ndarray:
    h, w = shape
    oy, ox = rng.integers(0, _TEX, size=2)
    my = np.broadcast_to(np.mod(np.arange(h) * scale + oy, _TEX).astype(np.float32)[:, None], (h, w))
    mx = np.broadcast_to(np.mod(np.arange(w) * scale + ox, _TEX).astype(np.float32)[None, :], (h, w))
    mx, my = np.ascontiguousarray(mx), np.ascontiguousarray(my)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


class _Renderer:
    def __init__(self, scene: Scene, style: Style, rng: np.random.Generator, condition: str | None):
        self.scene, self.style, self.rng, self.condition = scene, style, rng, condition
        self.t = scene.table
        self.ids = scene.ids
        self.h, self.w = scene.ids.shape
        self.px_scale = self.w / 256.0
        self.mat = self.t.material[self.ids]
        self.p = _Pixels(scene)
        self.fine, self.medium, self.coarse = _texture_bank()
        self.emissive = np.zeros((self.h, self.w, 3), np.float32)
        # facade windows (set by details(), lit at night): mask, per-window hash, shop-front windows
        self.window_mask = np.zeros(self.mat.shape, bool)
        self.window_id = np.zeros(self.mat.shape, np.float32)
        self.shop = np.zeros(self.mat.shape, bool)

    def mask(self, *materials: int) -> np.ndarray:
        return np.isin(self.mat, np.asarray(materials, np.uint8))

    # -- surfaces ------------------------------------------------------------------------------------
    def albedo(self) -> np.ndarray:
        t, st = self.t, self.style
        k = np.minimum((t.variant * PALETTE_SIZE).astype(np.int64), PALETTE_SIZE - 1)
        frac = t.variant * PALETTE_SIZE - k
        base = st.colors[t.material, k] * (1.0 + st.jitter * (2.0 * frac - 1.0))[:, None]
        lamp_off = (t.material == Material.TL_LAMP) & (t.params[:, 0] < 0.5)
        base[lamp_off] *= 0.25
        return base[self.ids].astype(np.float32)

    def shading(self) -> np.ndarray:
        t, st = self.t, self.style
        lambert = np.maximum(t.normal @ self.scene.sun.astype(np.float32), 0.0)
        shade = st.ambient + st.diffuse * lambert
        shade[t.material == Material.SKY] = 1.0
        return shade.astype(np.float32)[self.ids]

    def details(self, albedo: np.ndarray) -> np.ndarray:
        """Windows, paving joints, fence bars and sign borders, drawn from world coordinates."""
        st, p, t = self.style, self.p, self.t
        params = t.params[self.ids]
        glass = st.colors[Material.GLASS, 0]
        # facade windows: params = (spacing, floor height, width fraction, height fraction)
        m = self.mat == Material.FACADE
        if m.any():
            sx, sy, wf, hf = (params[m][:, i] for i in range(4))
            u, v = p.u[m], p.v[m]
            fu, fv = np.mod(u / sx, 1.0), np.mod(v / sy, 1.0)
            shop = _hash01(self.ids[m]) < 0.5
            upper = (v > 3.4) & (fu < wf) & (fv > 0.3) & (fv < 0.3 + hf)
            ground_floor = shop & (v > 0.5) & (v < 2.9) & (np.mod(u / (sx * 1.5), 1.0) < 0.85)
            win = upper | ground_floor
            ix, iy = np.floor(u / sx), np.floor(v / sy)
            self.window_mask[m] = win
            self.window_id[m] = _hash01(ix, iy, self.ids[m])
            self.shop[m] = ground_floor
            refl = 1.0 + st.window_reflect * (self.window_id[m] - 0.5) * 1.5
            sub = albedo[m]
            sub[win] = glass * refl[win, None]
            frame = (upper == 0) & (fu < wf + 0.06) & (fv > 0.25) & (fv < 0.35 + hf) & (v > 3.4)
            sub[frame] *= 0.8
            albedo[m] = sub
        # bus and tram window bands: params = (y0, y1, pitch, -)
        m = self.mask(Material.BUS_PAINT, Material.TRAM_PAINT)
        if m.any():
            y0, y1, pitch = params[m][:, 0], params[m][:, 1], params[m][:, 2]
            v = p.Y[m]
            win = (v > y0) & (v < y1) & (np.mod(p.u[m] / pitch, 1.0) < 0.85)
            sub = albedo[m]
            sub[win] = glass * 1.1
            albedo[m] = sub
        # fences: params = (post spacing, bar spacing, height, style)
        m = self.mat == Material.FENCE
        if m.any():
            posts, bars, height, kind = (params[m][:, i] for i in range(4))
            u, v = p.u[m], p.Y[m]
            solid = (np.mod(u / posts, 1.0) < 0.06) | (v > height - 0.08) | (np.abs(v - height * 0.5) < 0.04)
            mesh = (np.mod(u / bars, 1.0) < 0.3) & ((kind != 0) | (np.mod(v / bars, 1.0) < 0.3))
            planks = (kind == 2) & (np.mod(u / bars, 1.0) < 0.85)
            see_through = ~(solid | mesh | planks)
            sub = albedo[m]
            sub[see_through] *= 0.45
            albedo[m] = sub
        # sign borders: params = (centre x, centre y, radius, shape)
        m = self.mat == Material.SIGN
        if m.any():
            cx, cy, r, shape = (params[m][:, i] for i in range(4))
            dx, dy = (p.X[m] - cx) / r, (p.Y[m] - cy) / r
            dist = np.where(
                shape == 2,
                np.maximum(np.abs(dx), np.abs(dy) / 0.8),
                np.where(shape == 3, np.abs(dx) + np.abs(dy), np.hypot(dx, dy)),
            )
            k = np.minimum((t.variant[self.ids[m]] * PALETTE_SIZE).astype(np.int64), PALETTE_SIZE - 1)
            border_colour = np.where((k == 3)[:, None], st.colors[Material.SIGN, 0], np.float32(0.92))
            sub = albedo[m]
            edge = dist > 0.78
            sub[edge] = border_colour[edge]
            albedo[m] = sub
        # paving joints, fading with distance
        m = self.mask(Material.SIDEWALK, Material.CURB)
        if m.any() and st.tiles > 0:
            joints = (np.mod(p.X[m] / 0.6, 1.0) < 0.08) | (np.mod(p.Z[m] / 0.6, 1.0) < 0.08)
            fade = np.clip(10.0 / p.zc[m], 0.0, 1.0)
            albedo[m] *= (1.0 - st.tiles * joints * fade)[:, None]
        return albedo

    def texture(self, albedo: np.ndarray) -> np.ndarray:
        amps = self.style.texture[self.t.material][self.ids]
        if not amps.any():
            return albedo
        p = self.p
        fine = _screen_texture(self.fine, (self.h, self.w), self.rng)
        medium = _world_texture(self.medium, p.u, p.v, 6.0)
        coarse = _world_texture(self.coarse, p.u, p.v, 1.0)
        factor = 1.0 + amps[..., 0] * fine + amps[..., 1] * medium + amps[..., 2] * coarse
        return albedo * np.clip(factor, 0.3, 1.8)[..., None]

    def shadows(self, shade: np.ndarray) -> np.ndarray:
        st = self.style
        if st.shadow <= 0:
            return shade
        mask = _blur(self.scene.shadow.astype(np.float32) / 255.0, st.shadow_blur * self.px_scale)
        ground = self.mask(*_GROUND_MATERIALS)
        return shade * np.where(ground, 1.0 - st.shadow * mask, 1.0)

    def sky(self, colour: np.ndarray, albedo: np.ndarray) -> np.ndarray:
        st, cam = self.style, self.scene.camera
        m = self.mat == Material.SKY
        if not m.any():
            return colour
        up = np.clip((cam.cy - self.p.rows[m]) / max(cam.cy, 1.0), 0.0, 1.0)
        base = albedo[m]
        horizon = base + (1.0 - base) * 0.35
        zenith = base * 0.85
        g = st.sky_gradient
        sky = (1.0 - g) * base + g * (horizon * (1.0 - up)[:, None] + zenith * up[:, None])
        if st.clouds > 0:
            clouds = _screen_texture(self.coarse, (self.h, self.w), self.rng, scale=1.5 / self.px_scale)[m]
            cover = np.clip(clouds * 0.6 + 0.2, 0.0, 1.0) * st.clouds
            sky = sky * (1.0 - cover[:, None]) + 0.93 * cover[:, None]
        colour[m] = sky
        return colour

    # -- conditions ----------------------------------------------------------------------------------
    def fog(self, colour: np.ndarray) -> np.ndarray:
        rng = self.rng
        beta = rng.uniform(0.02, 0.04)
        air = rng.uniform(0.74, 0.86) * np.array([0.98, 1.0, 1.03], np.float32)
        trans = np.exp(-beta * np.minimum(self.p.dist, 400.0))[..., None]
        return colour * trans + air * (1.0 - trans)

    def rain(self, colour: np.ndarray) -> np.ndarray:
        rng, p = self.rng, self.p
        ground = self.mask(*_GROUND_MATERIALS)
        puddles = np.clip(_world_texture(self.coarse, p.u, p.v, 2.0) * 0.8 - 0.2, 0.0, 1.0)
        smear = cv2.GaussianBlur(colour, (0, 0), sigmaX=0.6 * self.px_scale, sigmaY=5.0 * self.px_scale)
        wet = colour * 0.65 + smear * (0.2 + 0.35 * puddles[..., None])
        colour = np.where(ground[..., None], wet, colour)
        return self._streaks(
            colour,
            rng,
            count=int(180 * self.h * self.w / 32768),
            length=(5, 14),
            value=(0.55, 0.85),
            alpha=0.35,
        )

    def _streaks(
        self,
        colour: np.ndarray,
        rng: np.random.Generator,
        *,
        count: int,
        length: tuple[int, int],
        value: tuple[float, float],
        alpha: float,
    ) -> np.ndarray:
        overlay = np.zeros((self.h, self.w), np.float32)
        slant = rng.uniform(-0.3, 0.3)
        for x, y, n, val in zip(
            rng.uniform(0, self.w, count),
            rng.uniform(-10, self.h, count),
            rng.uniform(*length, count) * self.px_scale,
            rng.uniform(*value, count),
            strict=True,
        ):
            cv2.line(overlay, (int(x), int(y)), (int(x + slant * n), int(y + n)), float(val), 1, cv2.LINE_AA)
        overlay = _blur(overlay, 0.5 * self.px_scale)[..., None]
        return colour * (1.0 - alpha * overlay) + alpha * overlay * 0.9

    def snow(self, colour: np.ndarray, shade: np.ndarray) -> np.ndarray:
        rng, p, t = self.rng, self.p, self.t
        bias_by_material = np.full(len(Material), -1.0, np.float32)
        for mat, b in (
            (Material.TERRAIN, 0.9),
            (Material.GROUND, 0.9),
            (Material.SIDEWALK, 0.55),
            (Material.CURB, 0.6),
            (Material.ROAD, -0.05),
            (Material.PAINT, -0.05),
            (Material.RAIL, 0.0),
            (Material.FOLIAGE, -0.15),
        ):
            bias_by_material[mat] = b
        bias = bias_by_material[self.mat]
        roofs = (t.normal[self.ids][..., 1] > 0.5) & ~self.mask(*_GROUND_MATERIALS)
        bias = np.where(roofs, 0.8, bias)
        noise = (
            _world_texture(self.coarse, p.u, p.v, 2.0) * 0.35
            + _world_texture(self.medium, p.u, p.v, 5.0) * 0.25
        )
        cover = np.clip((noise + bias) * 2.5, 0.0, 1.0)[..., None]
        snow = np.float32(0.93) * np.array([0.97, 0.98, 1.0], np.float32) * (0.85 + 0.15 * shade[..., None])
        colour = colour * (1.0 - cover) + snow * cover
        flakes = np.zeros((self.h, self.w), np.float32)
        count = int(350 * self.h * self.w / 32768)
        for x, y, r, val in zip(
            rng.uniform(0, self.w, count),
            rng.uniform(0, self.h, count),
            rng.uniform(0.5, 1.6, count) * self.px_scale,
            rng.uniform(0.5, 1.0, count),
            strict=True,
        ):
            cv2.circle(
                flakes, (int(x * 16), int(y * 16)), max(1, int(r * 16)), float(val), -1, cv2.LINE_AA, 4
            )
        flakes = _blur(flakes, 0.4 * self.px_scale)[..., None]
        return colour * (1.0 - 0.8 * flakes) + 0.8 * flakes * 0.95

    def night(self, albedo: np.ndarray, dark: float) -> np.ndarray:
        """Night lighting: ambient moonlight, lamp pools, lit windows, vehicle and signal lights, glare."""
        rng, p, cam = self.rng, self.p, self.scene.camera
        sodium = rng.random() < 0.6
        lamp_colour = np.array([1.0, 0.72, 0.42] if sodium else [0.9, 0.95, 1.0], np.float32)
        ambient = rng.uniform(0.03, 0.07) * dark * np.array([0.75, 0.85, 1.15], np.float32)
        light = np.broadcast_to(ambient, albedo.shape).copy()
        for x, y, z, kind in self.scene.lights:
            if kind == 0:  # street lamp: a pool of light under it
                d2 = (p.X - x) ** 2 + (p.Y - y) ** 2 * 0.5 + (p.Z - z) ** 2
                light += rng.uniform(0.7, 1.2) * lamp_colour * np.exp(-d2 / (2.0 * 5.0**2))[..., None]
            elif kind == 1:  # headlights light the road ahead of the car
                d2 = (p.X - x) ** 2 + (p.Z - (z - 7.0)) ** 2 * 0.3 + p.Y**2
                light += 0.5 * np.exp(-d2 / (2.0 * 2.5**2))[..., None]
        colour = albedo * light
        sky = self.mat == Material.SKY
        up = np.clip((cam.cy - p.rows) / max(cam.cy, 1.0), 0.0, 1.0)
        glow = np.exp(-up * 4.0)[..., None] * rng.uniform(0.06, 0.14) * lamp_colour
        colour = np.where(sky[..., None], np.array([0.015, 0.02, 0.04], np.float32) + glow, colour)
        # light sources and lit windows
        em = self.emissive
        m = self.mat
        em[m == Material.LAMP] = lamp_colour * 3.0
        em[m == Material.HEADLIGHT] = np.array([1.0, 1.0, 0.92], np.float32) * 3.0
        em[m == Material.TAILLIGHT] = np.array([1.0, 0.08, 0.05], np.float32) * 1.6
        lit_signal = (m == Material.TL_LAMP) & (self.t.params[self.ids][..., 0] > 0.5)
        em[lit_signal] = albedo[lit_signal] * 3.0
        p_lit = rng.uniform(0.15, 0.45)
        lit = self.window_mask & ((self.window_id < p_lit) | (self.shop & (self.window_id < 0.8)))
        warmth = np.array([1.0, 0.78, 0.45], np.float32)
        em[lit] = warmth * (0.5 + self.window_id[lit, None]) * 1.2
        colour = np.where(em.any(axis=-1, keepdims=True), em, colour)
        s = self.px_scale
        glare = _blur(em, 1.2 * s) * 0.5 + _blur(em, 4.0 * s) * 0.35 + _blur(em, 12.0 * s) * 0.2
        colour = colour + glare
        return 1.0 - np.exp(-colour * 1.4)  # soft highlight roll-off

    # -- camera --------------------------------------------------------------------------------------
    def camera(self, colour: np.ndarray, *, extra_noise: float = 0.0, extra_blur: float = 0.0) -> np.ndarray:
        st, rng = self.style, self.rng
        exposure = 1.0 + st.exposure_jitter * rng.uniform(-1.0, 1.0)
        gains = np.array([st.gain_r, st.gain_g, st.gain_b], np.float32)
        gains = gains * (1.0 + st.white_balance_jitter * rng.uniform(-1.0, 1.0, 3)).astype(np.float32)
        colour = colour * (exposure * gains)
        lum = colour @ np.array([0.299, 0.587, 0.114], np.float32)
        colour = lum[..., None] + st.saturation * (colour - lum[..., None])
        colour = np.clip(colour, 0.0, None)
        if st.gamma != 1.0:
            colour = colour**st.gamma
        if st.vignette > 0:
            r2 = ((self.p.cols - self.w / 2) / (self.w / 2)) ** 2 * 0.6 + (
                (self.p.rows - self.h / 2) / (self.h / 2)
            ) ** 2 * 0.4
            colour = colour * (1.0 - st.vignette * 0.5 * r2)[..., None]
        colour = _blur(colour.astype(np.float32), (st.blur + extra_blur) * self.px_scale)
        noise = st.noise + extra_noise
        if noise > 0:
            colour = colour + noise * rng.standard_normal((self.h, self.w, 1), dtype=np.float32)
        if st.chroma_noise + extra_noise > 0:
            colour = colour + (st.chroma_noise + extra_noise * 0.5) * rng.standard_normal(
                colour.shape, dtype=np.float32
            )
        return np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def run(self) -> np.ndarray:
        albedo = self.texture(self.details(self.albedo()))
        shade = self.shadows(self.shading())
        if self.condition in ("night", "darkzurich"):
            dark = 1.0 if self.condition == "night" else 0.7
            colour = self.night(albedo, dark)
            noise = self.rng.uniform(0.02, 0.035) * (1.0 if self.condition == "night" else 1.4)
            return self.camera(colour, extra_noise=noise, extra_blur=0.4)
        colour = self.sky(albedo * shade[..., None], albedo)
        if self.condition == "fog":
            colour = self.fog(colour)
        elif self.condition == "rain":
            colour = self.rain(colour)
        elif self.condition == "snow":
            colour = self.snow(colour, shade)
        return self.camera(colour)


def overcast(style: Style, brightness: float) -> Style:
    """Diffuse daylight under clouds: no cast shadows, little directional light, a grey sky."""
    colors = style.colors.copy()
    colors[Material.SKY] = brightness * np.array([0.96, 0.98, 1.0], np.float32)
    return style.replace(colors=colors, ambient=0.55 + 0.3 * brightness, diffuse=0.12, shadow=0.0, clouds=0.0)


def render(scene: Scene, style: Style, rng: np.random.Generator, condition: str | None = None) -> np.ndarray:
    """Render ``scene`` in ``style`` (uint8 RGB H×W×3).

    ``condition`` is None (clear day), one of :data:`CONDITIONS`, or ``"darkzurich"`` (a darker,
    noisier night). Fog, rain and snow switch to overcast lighting first.
    """
    if condition in ("fog", "rain", "snow"):
        brightness = {"fog": 0.82, "rain": 0.62, "snow": 0.86}[condition]
        style = overcast(style, brightness)
    elif condition not in (None, "night", "darkzurich"):
        raise ValueError(f"unknown condition {condition!r}")
    return _Renderer(scene, style, rng, condition).run()
