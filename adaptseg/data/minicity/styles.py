"""Per-domain appearance: palettes, textures, lighting and camera response.

A :class:`Style` is a bag of numbers, so two styles blend linearly (:meth:`Style.blend`). That is how
the Cityscapes-like target is made: the GTA-like synthetic look moved towards a photographic one by
``strength`` (DESIGN.md: 0.4–0.5 gives a real gap that adaptation can close; 1.0 turns the task into
a colour lookup table that self-training cannot recover).

Synthetic styles are flat-shaded and saturated (no texture, no noise, crisp shadows); the photographic
style has muted, shifted hues, texture, soft shadows, blur, vignetting and sensor noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptseg.data.minicity.geometry import NUM_MATERIALS, Material

PALETTE_SIZE = 6


def _palette(spec: dict[str, list[str]]) -> np.ndarray:
    """Material name → hex colours, cycled to :data:`PALETTE_SIZE` entries; returns (materials, K, 3) in [0, 1]."""
    out = np.zeros((NUM_MATERIALS, PALETTE_SIZE, 3), np.float32)
    for mat in Material:
        colours = spec[mat.name]
        for k in range(PALETTE_SIZE):
            hexa = colours[k % len(colours)]
            out[mat, k] = [int(hexa[i : i + 2], 16) / 255.0 for i in (0, 2, 4)]
    return out


def _textures(default: tuple[float, float, float], **overrides: tuple[float, float, float]) -> np.ndarray:
    """Per-material texture amplitudes (fine grain, medium blotches, coarse patches)."""
    out = np.tile(np.asarray(default, np.float32), (NUM_MATERIALS, 1))
    for name, amps in overrides.items():
        out[Material[name]] = amps
    return out


@dataclass(frozen=True)
class Style:
    """How a domain looks. Colours are sRGB in [0, 1]; sizes in pixels refer to a 256-pixel-wide image."""

    colors: np.ndarray  # (materials, K, 3)
    texture: np.ndarray  # (materials, 3): fine / medium / coarse amplitude
    jitter: float = 0.15  # per-surface brightness spread
    ambient: float = 0.55
    diffuse: float = 0.6
    shadow: float = 0.45  # darkening of cast shadows on the ground
    shadow_blur: float = 0.0
    sky_gradient: float = 0.25
    clouds: float = 0.0
    tiles: float = 0.0  # contrast of paving joints on sidewalks
    window_reflect: float = 0.3
    saturation: float = 1.0
    gamma: float = 1.0
    gain_r: float = 1.0
    gain_g: float = 1.0
    gain_b: float = 1.0
    vignette: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    chroma_noise: float = 0.0
    exposure_jitter: float = 0.05
    white_balance_jitter: float = 0.0

    def blend(self, other: Style, t: float) -> Style:
        """The style ``t`` of the way from ``self`` to ``other`` (every number interpolated linearly)."""
        values = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = (
                (1.0 - t) * a + t * b if isinstance(a, np.ndarray) else float((1.0 - t) * a + t * b)
            )
        return Style(**values)

    def replace(self, **changes: Any) -> Style:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# --- GTA-like: a game engine's saturated, flat-shaded look ---------------------------------------
GTA = Style(
    colors=_palette(
        {
            "SKY": ["5a9be6", "6eaaf0", "4f8fe0", "78b4f5"],
            "GROUND": ["8c7050", "7a6648"],
            "ROAD": ["5f5f69", "555560", "67646e", "5a5a62"],
            "PAINT": ["f0f0f0", "ebebe6", "f0d23c"],
            "SIDEWALK": ["c8b9a0", "b4aa9b", "d2c3aa", "bebeb4"],
            "CURB": ["dcdcd2", "d2d2c8"],
            "TERRAIN": ["78be46", "8cc850", "96b45a", "6eb43c"],
            "FACADE": ["d2965f", "b4b4aa", "e6cd9b", "a85a46", "96aac8", "ebdcc3"],
            "WALL": ["b4a08c", "c8b48c", "9b9ba5", "aa8c78"],
            "FENCE": ["7d6e5f", "5f6e5f", "a08c6e", "646e82"],
            "POLE": ["7d8287", "5f6469", "8c9196"],
            "LAMP": ["f0f0d2", "e6e6c8"],
            "TL_HOUSING": ["282828", "3c3c1e", "1e2832"],
            "TL_LAMP": ["f0281e", "fab41e", "28e65a"],
            "SIGN": ["dc1e1e", "1e50c8", "f0c828", "f0f0f0", "1e8c3c", "dc1e1e"],
            "SIGN_BACK": ["8c8c91", "a0a0a5"],
            "FOLIAGE": ["3c8c28", "509632", "32782d", "5aa03c"],
            "TRUNK": ["644628", "5a3c23"],
            "CAR_PAINT": ["c81e1e", "1e3cb4", "e6e6e6", "1e1e23", "aaafb4", "e6be1e"],
            "GLASS": ["28324b", "1e2837", "323c5a"],
            "TIRE": ["191919"],
            "HEADLIGHT": ["fafae6"],
            "TAILLIGHT": ["c81414"],
            "BUS_PAINT": ["e6c81e", "c82828", "285aaa", "f0f0f0"],
            "TRUCK_PAINT": ["e6e6e6", "c83c28", "3c783c", "dc9628"],
            "TRAM_PAINT": ["e6e6e6", "c82828", "f0c828", "1e6eaa"],
            "SKIN": ["f0c8aa", "c8966e", "8c5f3c", "e6b496"],
            "CLOTHES": ["1e1e1e", "c82828", "283ca0", "e6e6e6", "3c823c", "967850"],
            "HAIR": ["281e14", "5a3c1e", "141414", "c8aa64"],
            "BIKE": ["1e1e1e", "c82828", "2850b4", "b4b4b4"],
            "STATIC": ["506e50", "786450", "969696"],
            "RAIL": ["96969b"],
            "EGO": ["282832"],
        }
    ),
    texture=_textures((0.0, 0.02, 0.02), FOLIAGE=(0.0, 0.08, 0.05), TERRAIN=(0.0, 0.05, 0.04)),
    jitter=0.18,
    ambient=0.55,
    diffuse=0.6,
    shadow=0.45,
    shadow_blur=0.0,
    sky_gradient=0.25,
    window_reflect=0.2,
    saturation=1.15,
    exposure_jitter=0.04,
)

# --- SYNTHIA-like: a cartoonish engine with its own hues and soft, flat lighting -----------------
SYNTHIA = Style(
    colors=_palette(
        {
            "SKY": ["8cc8ff", "a0d2ff", "78b9f5"],
            "GROUND": ["a08264"],
            "ROAD": ["78787d", "6e6e73", "828282"],
            "PAINT": ["ffffff", "fafae6"],
            "SIDEWALK": ["dcb4a0", "c8aa96", "e6c8b4"],
            "CURB": ["e6e6e6"],
            "TERRAIN": ["8cdc5a", "a0e664"],
            "FACADE": ["f0b48c", "c8c8dc", "f5e1b4", "be6e5a", "a0c8e6", "e6aac8"],
            "WALL": ["d2b496", "e6c8a0", "aab4c8"],
            "FENCE": ["aa8c64", "828c82"],
            "POLE": ["a0a0aa", "8c8c96"],
            "LAMP": ["ffffe6"],
            "TL_HOUSING": ["32323c", "505028"],
            "TL_LAMP": ["ff3232", "ffc832", "32ff78"],
            "SIGN": ["f03232", "3264e6", "ffdc32", "ffffff", "32b450", "f03232"],
            "SIGN_BACK": ["aaaab4"],
            "FOLIAGE": ["50b43c", "64c846", "46a032"],
            "TRUNK": ["825a32"],
            "CAR_PAINT": ["f03c3c", "3c64f0", "ffffff", "323237", "c8c8d2", "ffd232"],
            "GLASS": ["46648c", "3c5078"],
            "TIRE": ["232323"],
            "HEADLIGHT": ["ffffff"],
            "TAILLIGHT": ["f01e1e"],
            "BUS_PAINT": ["ffdc32", "f03c3c", "3c78dc"],
            "TRUCK_PAINT": ["ffffff", "f05a3c"],
            "TRAM_PAINT": ["ffffff", "f03c3c"],
            "SKIN": ["ffd2b4", "dca078", "a06e46"],
            "CLOTHES": ["323232", "f03c3c", "3c50dc", "ffffff", "50b450", "c89664"],
            "HAIR": ["3c2814", "141414", "dcbe78"],
            "BIKE": ["323232", "f03c3c", "3c6ef0"],
            "STATIC": ["649664", "a08264"],
            "RAIL": ["aaaaaa"],
            "EGO": ["323232"],
        }
    ),
    texture=_textures((0.0, 0.0, 0.0), FOLIAGE=(0.0, 0.05, 0.0)),
    jitter=0.12,
    ambient=0.75,
    diffuse=0.3,
    shadow=0.25,
    sky_gradient=0.1,
    window_reflect=0.1,
    saturation=1.25,
    exposure_jitter=0.03,
)

# --- Synscapes-like: physically based rendering, cleaner and cooler than the game look -----------
SYNSCAPES = Style(
    colors=_palette(
        {
            "SKY": ["9bbee1", "afc8e6", "8cb4dc"],
            "GROUND": ["6e6450"],
            "ROAD": ["4b4b50", "55555a", "46464b"],
            "PAINT": ["e6e6e1", "d7c35a"],
            "SIDEWALK": ["a5a096", "9b9b96", "b4aa9b"],
            "CURB": ["bebeb9"],
            "TERRAIN": ["6e9646", "7d9b50", "648c41"],
            "FACADE": ["b48c6e", "a0a09b", "c8b496", "8c5041", "8291a5", "d2c8b4"],
            "WALL": ["a0968c", "b4a58c", "8c8c96"],
            "FENCE": ["6e6459", "55605a"],
            "POLE": ["6e7378", "5a5f64"],
            "LAMP": ["f0f0dc"],
            "TL_HOUSING": ["232323", "373719"],
            "TL_LAMP": ["e62819", "f0aa19", "23d25a"],
            "SIGN": ["c81e1e", "1e46b4", "e6be23", "ebebeb", "197d37", "c81e1e"],
            "SIGN_BACK": ["828287"],
            "FOLIAGE": ["37692d", "417832", "2d5a28"],
            "TRUNK": ["503c2d"],
            "CAR_PAINT": ["a01e1e", "1e3291", "d7d7d7", "19191e", "9196a0", "c8aa28"],
            "GLASS": ["232d41", "19232d"],
            "TIRE": ["161616"],
            "HEADLIGHT": ["fafaf0"],
            "TAILLIGHT": ["b41414"],
            "BUS_PAINT": ["d2b41e", "b42323", "235096"],
            "TRUCK_PAINT": ["dcdcdc", "b43c28", "37693c"],
            "TRAM_PAINT": ["dcdcdc", "b42828", "1e5f96"],
            "SKIN": ["e1b496", "b4825f", "7d5537"],
            "CLOTHES": ["1e1e23", "aa2828", "23378c", "d7d7d7", "376e37", "82694b"],
            "HAIR": ["231914", "4b3219", "b49b5f"],
            "BIKE": ["1e1e1e", "aa2323", "23469b"],
            "STATIC": ["465f46", "6e5a46"],
            "RAIL": ["8c8c91"],
            "EGO": ["23232d"],
        }
    ),
    texture=_textures(
        (0.02, 0.06, 0.05), FOLIAGE=(0.05, 0.15, 0.08), TERRAIN=(0.04, 0.12, 0.08), ROAD=(0.03, 0.06, 0.08)
    ),
    jitter=0.15,
    ambient=0.5,
    diffuse=0.65,
    shadow=0.5,
    shadow_blur=0.6,
    sky_gradient=0.35,
    clouds=0.1,
    tiles=0.08,
    window_reflect=0.35,
    saturation=1.0,
    gamma=1.05,
    blur=0.4,
    noise=0.006,
    exposure_jitter=0.06,
)

# --- Photographic: Cityscapes-like tones, texture, soft light, sensor noise ------------------------
# Colours move in class- and entry-specific directions (purple-grey road -> neutral asphalt, beige
# sidewalk -> cool grey, lime grass -> dry, colourful cars -> mostly achromatic in another order), so that the
# shift is not one global colour transform that re-normalising feature statistics (AdaBN) undoes.
PHOTO = Style(
    colors=_palette(
        {
            "SKY": ["a5bed7", "b4c8dc", "c3d2e1", "9bb4d2"],
            "GROUND": ["736e64"],
            "ROAD": ["6e6e6e", "646466", "787673", "6a6a6a"],
            "PAINT": ["d2d2c8", "c8c8be", "c8b46e"],
            "SIDEWALK": ["8c8e91", "828689", "96938f", "878b8e"],
            "CURB": ["8c8c8c", "828282"],
            "TERRAIN": ["8c8255", "968c5f", "7d7850", "a09664"],
            "FACADE": ["8c9196", "a0968c", "6e6e78", "b4aa9b", "7d6450", "9ba5a0"],
            "WALL": ["d2d2cd", "8c8c91", "c3b9aa", "969b9b"],
            "FENCE": ["a5a5aa", "505a50", "8c8c8c", "6e6455"],
            "POLE": ["4b4d4f", "5a5750", "46494b"],
            "LAMP": ["b4b4aa"],
            "TL_HOUSING": ["3c3c3c", "2d2d23", "323741"],
            "TL_LAMP": ["c83228", "d2a032", "3cb464"],
            "SIGN": ["b42d2d", "2d4b96", "c8aa32", "dcdcd7", "2d6e41", "b42d2d"],
            "SIGN_BACK": ["a0a0a5", "8c8c91"],
            "FOLIAGE": ["2d4632", "3c5037", "283c2d", "465a3c"],
            "TRUNK": ["3c3228", "463c32"],
            "CAR_PAINT": ["a0a0a0", "1e1e1e", "5a5f64", "d2d2cd", "28324b", "783228"],
            "GLASS": ["3c4655", "46505a", "373c46"],
            "TIRE": ["2d2d2d"],
            "HEADLIGHT": ["dcdcd2"],
            "TAILLIGHT": ["8c1e1e"],
            "BUS_PAINT": ["d2d2d2", "2d4b7d", "b4a03c", "962d2d"],
            "TRUCK_PAINT": ["6e7378", "c8c8c8", "b48232", "3c5a3c"],
            "TRAM_PAINT": ["2d5a82", "d2d2d2", "9b2d2d", "c8aa3c"],
            "SKIN": ["c8a08c", "a07d64", "6e5041", "b4917d"],
            "CLOTHES": ["6e5f4b", "232326", "b4b4b4", "2d3764", "7d2d2d", "3c553c"],
            "HAIR": ["2d231e", "4b3728", "1e1e1e", "8c7d5a"],
            "BIKE": ["8c8c8c", "232323", "822d2d", "2d4178"],
            "STATIC": ["4b5a4b", "645a4b", "7d7d7d"],
            "RAIL": ["646469"],
            "EGO": ["28282d"],
        }
    ),
    texture=_textures(
        (0.08, 0.15, 0.12),
        FOLIAGE=(0.2, 0.4, 0.2),
        TERRAIN=(0.15, 0.3, 0.2),
        ROAD=(0.1, 0.12, 0.18),
        SKY=(0.0, 0.0, 0.0),
        FACADE=(0.06, 0.15, 0.15),
        SIDEWALK=(0.08, 0.1, 0.15),
    ),
    jitter=0.22,
    ambient=0.68,
    diffuse=0.38,
    shadow=0.35,
    shadow_blur=1.5,
    sky_gradient=0.3,
    clouds=0.35,
    tiles=0.2,
    window_reflect=0.45,
    saturation=0.9,
    gamma=1.0,
    vignette=0.3,
    blur=1.0,
    noise=0.025,
    chroma_noise=0.01,
    exposure_jitter=0.1,
    white_balance_jitter=0.04,
)


def photo_like(strength: float, base: Style = GTA) -> Style:
    """The Cityscapes-like target look: ``base`` moved ``strength`` of the way to :data:`PHOTO`."""
    return base.blend(PHOTO, strength)
