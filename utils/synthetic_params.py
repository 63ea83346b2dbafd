"""What one synthetic face is: its parameters (``FaceParams``), drawn from ``default_rng([seed, index])``
independently of the resolution, and the binary attributes they imply.  ``utils.synthetic_drawing`` draws them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# CelebA-style names where the meaning matches; 'short_hair' stands in for
# CelebA's 'Male' (a binary attribute with a large, easy-to-see effect).
ATTRIBUTE_NAMES = ("short_hair", "Smiling", "Mouth_Slightly_Open", "Eyeglasses",
                   "Bangs", "Blond_Hair", "Beard")

# Light to dark, roughly spanning the Fitzpatrick scale; a face interpolates between neighbours.
SKIN_TONES = np.array([(255, 226, 204), (246, 205, 174), (233, 184, 145), (212, 157, 116),
                       (181, 125, 88), (141, 92, 62), (104, 66, 45), (74, 48, 35)], np.float64)
HAIR_COLOURS = {"black": (30, 26, 26), "dark_brown": (66, 42, 28), "brown": (112, 74, 44),
                "auburn": (140, 62, 34), "blonde": (222, 188, 120), "grey": (170, 168, 165)}
_HAIR_NAMES = tuple(HAIR_COLOURS)
_HAIR_PROBS = (0.28, 0.24, 0.18, 0.1, 0.14, 0.06)
IRIS_COLOURS = ((84, 52, 30), (60, 38, 24), (70, 110, 160), (80, 120, 80), (120, 100, 60), (90, 110, 130))
HAIR_STYLES = ("buzz", "short", "bob", "long", "curly")
_STYLE_PROBS = (0.15, 0.3, 0.2, 0.25, 0.1)
_SHORT_STYLES = ("buzz", "short")


@dataclass(frozen=True)
class FaceParams:
    """Everything that decides one face, in unit canvas coordinates (0..1, y down)."""
    bg_top: tuple
    bg_bottom: tuple
    bg_angle: float
    skin: tuple
    cx: float
    cy: float
    a: float            # face half-width
    b: float            # face half-height
    roll: float         # degrees, counter-clockwise
    yaw: float          # -1..1, shifts inner features sideways
    hair_style: str
    hair_name: str      # key of HAIR_COLOURS
    hair: tuple
    bangs: bool
    parting: float      # -1..1, which side the hairline rises toward
    eye_y: float        # relative to b
    eye_dx: float       # relative to a
    eye_w: float        # relative to a
    eye_open: float     # height / width
    iris: tuple
    gaze: float         # -1..1
    brow_lift: float
    brow_tilt: float
    brow_w: float       # stroke width, relative to a
    nose_len: float
    mouth_w: float      # relative to a
    smiling: bool
    mouth_open: bool
    lips: tuple
    glasses: bool
    glasses_colour: tuple
    beard: bool
    clothes: tuple
    light_angle: float
    light_strength: float


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (int(r * 255), int(g * 255), int(b * 255))


def _jitter(rng: np.random.Generator, colour, amount: float) -> tuple:
    c = np.asarray(colour, np.float64) * (1 + rng.uniform(-amount, amount)) + rng.normal(0, 6, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def mix_rgb(c1, c2, t: float) -> tuple:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(c1, c2))


def sample_face_params(seed: int, index: int) -> FaceParams:
    """Draw one face's parameters from ``default_rng([seed, index])`` (independent of resolution)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed} index={index}")
    rng = np.random.default_rng([seed, index])
    hue = rng.uniform()
    bg_top = _hsv_to_rgb(hue, rng.uniform(0.1, 0.6), rng.uniform(0.45, 0.95))
    bg_bottom = _hsv_to_rgb((hue + rng.uniform(-0.15, 0.15)) % 1.0, rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(t)
    skin = _jitter(rng, SKIN_TONES[lo] + (SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[lo]) * (t - lo),
                   0.04)
    scale = rng.uniform(0.9, 1.08)
    hair_name = _HAIR_NAMES[rng.choice(len(_HAIR_NAMES), p=_HAIR_PROBS)]
    hair_style = HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=_STYLE_PROBS)]
    smiling = bool(rng.uniform() < 0.5)
    mouth_open = bool(rng.uniform() < 0.35)
    lip_base = mix_rgb(skin, (196, 70, 80), rng.uniform(0.35, 0.6))
    return FaceParams(
        bg_top=bg_top, bg_bottom=bg_bottom, bg_angle=rng.uniform(-0.5, 0.5) * math.pi,
        skin=skin,
        cx=0.5 + rng.uniform(-0.04, 0.04), cy=0.47 + rng.uniform(-0.03, 0.03),
        a=0.24 * scale * rng.uniform(0.93, 1.07), b=0.315 * scale,
        roll=rng.uniform(-10, 10), yaw=rng.uniform(-1, 1),
        hair_style=hair_style, hair_name=hair_name, hair=_jitter(rng, HAIR_COLOURS[hair_name], 0.12),
        bangs=bool(rng.uniform() < (0.1 if hair_style == "buzz" else 0.4)), parting=rng.uniform(-1, 1),
        eye_y=rng.uniform(-0.12, 0.0), eye_dx=rng.uniform(0.36, 0.46), eye_w=rng.uniform(0.24, 0.3),
        eye_open=rng.uniform(0.42, 0.62), iris=_jitter(rng, IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], 0.1),
        gaze=rng.uniform(-1, 1),
        brow_lift=rng.uniform(0.13, 0.2), brow_tilt=rng.uniform(-0.05, 0.06), brow_w=rng.uniform(0.05, 0.09),
        nose_len=rng.uniform(0.17, 0.26),
        mouth_w=rng.uniform(0.5, 0.72), smiling=smiling, mouth_open=mouth_open, lips=lip_base,
        glasses=bool(rng.uniform() < 0.15), glasses_colour=_hsv_to_rgb(rng.uniform(), 0.5, rng.uniform(0.05, 0.45)),
        beard=bool(hair_style in _SHORT_STYLES and rng.uniform() < 0.3),
        clothes=_hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.85)),
        light_angle=rng.uniform(0, 2 * math.pi), light_strength=rng.uniform(0.05, 0.2),
    )


def params_attributes(p: FaceParams) -> dict[str, bool]:
    return {"short_hair": p.hair_style in _SHORT_STYLES, "Smiling": p.smiling,
            "Mouth_Slightly_Open": p.mouth_open, "Eyeglasses": p.glasses, "Bangs": p.bangs,
            "Blond_Hair": p.hair_name == "blonde", "Beard": p.beard}
