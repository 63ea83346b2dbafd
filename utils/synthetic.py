"""Procedurally drawn cartoon faces: the built-in default dataset.

Every script runs without a download because ``--data synthetic`` renders faces
on the fly (``utils.data`` caches them).  The faces have the structure a face
generator has to learn -- a background, a skin-toned oval, hair of several
styles and colours, eyes with irises and pupils, brows, nose, mouth (neutral,
smile, grin, open), optional glasses and beard, pose (yaw shift, roll, scale and
position jitter) and soft lighting -- so FID visibly falls as a model trains.

Determinism: image ``i`` is a pure function of ``(seed, i, resolution)``.  Its
parameters come from ``np.random.default_rng([seed, i])`` and do not depend on
the resolution, so the same index is the same face at 16, 32, 64 or 128 px.
Faces are drawn with PIL on a canvas ``supersample_factor(resolution)`` times
the output size (at least 128 px) and reduced with a Lanczos filter, so edges
are antialiased at every resolution.  Speed (one core, this repo's CI machine):
about 1.2 ms per face at 16-64 px and 2.3 ms at 128 px, i.e. 15,000 faces in
~18 s at 64 px and ~34 s at 128 px.

``python -m utils.synthetic --out preview.png`` writes a preview grid.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

# Bump when a change alters pixels, so caches keyed on it (utils.data) are rebuilt.
RENDERER_VERSION = 1

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


def supersample_factor(resolution: int) -> int:
    """Internal drawing scale: at least 128 px canvas so thin strokes survive at 16 px."""
    return max(2, math.ceil(128 / resolution))


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


def _mix(c1, c2, t: float) -> tuple:
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
    lip_base = _mix(skin, (196, 70, 80), rng.uniform(0.35, 0.6))
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


# ----------------------------------------------------------------------------------------------
# Drawing.  Shapes are polygons built in unit coordinates and rotated in numpy, so head roll
# costs nothing extra (rotating a supersampled bitmap with PIL was slower than all the drawing).
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


class _Pen:
    """ImageDraw in unit coordinates with an optional rotation about a pivot (degrees, counter-clockwise)."""

    def __init__(self, img: Image.Image, size: int):
        self.d = ImageDraw.Draw(img)
        self.s = size
        self.rotate(0.0, (0.5, 0.5))

    def rotate(self, degrees: float, pivot: tuple[float, float]) -> None:
        r = math.radians(degrees)
        # y points down, so a visually counter-clockwise turn is x' = c + R(-r) (x - c) in these axes.
        self.cos, self.sin = math.cos(r), math.sin(r)
        self.px, self.py = pivot

    def _map(self, x: np.ndarray, y: np.ndarray) -> list:
        dx, dy = x - self.px, y - self.py
        xs = (self.px + dx * self.cos + dy * self.sin) * self.s
        ys = (self.py - dx * self.sin + dy * self.cos) * self.s
        return np.stack([xs, ys], 1).ravel().tolist()

    def _n(self, rx: float, ry: float, frac: float = 1.0) -> int:
        # ~8 canvas px per segment: the polygon is within 0.1 px of the true ellipse after downsampling.
        return int(min(72, max(10, 0.8 * max(rx, ry) * self.s * frac)))

    def ellipse_xy(self, cx, cy, rx, ry, start=None, end=None) -> tuple[np.ndarray, np.ndarray]:
        """Unit-coordinate points of an ellipse, or of an arc from ``start`` to ``end`` degrees (either direction)."""
        if start is None:
            c, s = _unit_circle(self._n(rx, ry))
        else:
            t = np.radians(np.linspace(start, end, self._n(rx, ry, abs(end - start) / 360) + 1))
            c, s = np.cos(t), np.sin(t)
        return cx + rx * c, cy + ry * s

    def _ellipse_pts(self, cx, cy, rx, ry, start=None, end=None) -> list:
        return self._map(*self.ellipse_xy(cx, cy, rx, ry, start, end))

    def path_polygon(self, xs: np.ndarray, ys: np.ndarray, fill):
        self.d.polygon(self._map(np.asarray(xs, np.float64), np.asarray(ys, np.float64)), fill=fill)

    def arcs_polygon(self, arcs, fill):
        """One filled polygon through several arcs ``(cx, cy, rx, ry, start, end)`` in order."""
        pts = [self.ellipse_xy(*arc) for arc in arcs]
        self.d.polygon(self._map(np.concatenate([x for x, _ in pts]), np.concatenate([y for _, y in pts])), fill=fill)

    def ellipse(self, cx, cy, rx, ry, fill):
        self.d.polygon(self._ellipse_pts(cx, cy, rx, ry), fill=fill)

    def circle(self, cx, cy, r, fill):
        """Circles are rotation invariant, so PIL's own (faster) ellipse is used at the rotated centre."""
        x, y = self._map(np.array([cx]), np.array([cy]))
        rs = r * self.s
        self.d.ellipse([x - rs, y - rs, x + rs, y + rs], fill=fill)

    def ellipse_outline(self, cx, cy, rx, ry, colour, width):
        pts = self._ellipse_pts(cx, cy, rx, ry)
        self.d.line(pts + pts[:4], fill=colour, width=self._w(width), joint="curve")

    def chord(self, cx, cy, rx, ry, start, end, fill):
        """Filled chord; angles in degrees clockwise from +x, as in PIL."""
        self.d.polygon(self._ellipse_pts(cx, cy, rx, ry, start, end), fill=fill)

    def arc(self, cx, cy, rx, ry, start, end, colour, width):
        self.d.line(self._ellipse_pts(cx, cy, rx, ry, start, end), fill=colour, width=self._w(width), joint="curve")

    def polygon(self, pts, fill):
        p = np.asarray(pts, np.float64)
        self.d.polygon(self._map(p[:, 0], p[:, 1]), fill=fill)

    def line(self, pts, colour, width):
        p = np.asarray(pts, np.float64)
        self.d.line(self._map(p[:, 0], p[:, 1]), fill=colour, width=self._w(width), joint="curve")

    def rounded(self, x0, y0, x1, y1, r, fill):
        """Rounded rectangle as one polygon of four quarter arcs."""
        c, s = _unit_circle(32)
        q = [np.arange(k * 8, k * 8 + 9) % 32 for k in range(4)]
        centres = ((x1 - r, y1 - r), (x0 + r, y1 - r), (x0 + r, y0 + r), (x1 - r, y0 + r))
        xs = np.concatenate([cx + r * c[i] for (cx, _), i in zip(centres, q)])
        ys = np.concatenate([cy + r * s[i] for (_, cy), i in zip(centres, q)])
        self.d.polygon(self._map(xs, ys), fill=fill)

    def _w(self, width: float) -> int:
        return max(1, round(width * self.s))


def _shade(c, f: float) -> tuple:
    return tuple(int(min(255, max(0, v * f))) for v in c)


def _draw_back_hair(pen: _Pen, p: FaceParams):
    cx, cy, a, b, h = p.cx, p.cy, p.a, p.b, p.hair
    if p.hair_style == "buzz":
        pen.ellipse(cx, cy - 0.06 * b, a * 1.05, b * 1.02, h)
    elif p.hair_style == "short":
        pen.ellipse(cx, cy - 0.12 * b, a * 1.13, b * 1.02, h)
    elif p.hair_style == "bob":
        pen.ellipse(cx, cy - 0.2 * b, a * 1.22, b * 1.0, h)
        pen.rounded(cx - a * 1.22, cy - 0.2 * b, cx + a * 1.22, cy + 0.55 * b, 0.25 * a, h)
    elif p.hair_style == "long":
        pen.ellipse(cx, cy - 0.22 * b, a * 1.25, b * 0.98, h)
        pen.rounded(cx - a * 1.25, cy - 0.3 * b, cx + a * 1.25, cy + 1.9 * b, 0.3 * a, h)
    else:  # curly: a round volume with a ring of curls
        pen.ellipse(cx, cy - 0.25 * b, a * 1.45, b * 1.08, h)
        curl = _shade(h, 0.85)
        for k in range(11):
            ang = math.pi * (0.95 + 1.1 * k / 10)
            pen.circle(cx + math.cos(ang) * a * 1.4, cy - 0.25 * b + math.sin(ang) * b * 1.02, a * 0.2, curl)


def _draw_body(pen: _Pen, p: FaceParams):
    cx, cy, a, b = p.cx, p.cy, p.a, p.b
    pen.ellipse(cx, cy + 2.25 * b, a * 2.3, b * 1.05, p.clothes)
    pen.chord(cx, cy + 1.22 * b, 0.62 * a, 0.3 * b, 0, 180, _shade(p.clothes, 0.75))  # collar shadow
    neck = _shade(p.skin, 0.82)
    pen.rounded(cx - 0.45 * a, cy + 0.5 * b, cx + 0.45 * a, cy + 1.3 * b, 0.1 * a, neck)
    pen.chord(cx, cy + 1.22 * b, 0.47 * a, 0.2 * b, 0, 180, neck)


def _draw_ears(pen: _Pen, p: FaceParams):
    ear = _shade(p.skin, 0.9)
    inner = _shade(p.skin, 0.75)
    for side in (-1, 1):
        # The ear on the side the face turns away from slides behind the head.
        hide = max(0.0, side * p.yaw) * 0.35
        ex = p.cx + side * p.a * (0.97 - hide)
        pen.ellipse(ex, p.cy + 0.02 * p.b, 0.13 * p.a, 0.2 * p.b, ear)
        pen.ellipse(ex + side * 0.02 * p.a, p.cy + 0.02 * p.b, 0.06 * p.a, 0.11 * p.b, inner)


def _draw_face(pen: _Pen, p: FaceParams):
    cx, cy, a, b = p.cx, p.cy, p.a, p.b
    # Nested ellipses shifted toward the light: a stepped falloff that downsampling softens.
    lx, ly = math.cos(p.light_angle), math.sin(p.light_angle)
    pen.ellipse(cx, cy, a, b, _shade(p.skin, 0.86))
    for k, f in enumerate((0.92, 0.97, 1.0)):
        shrink = 0.96 - 0.1 * k
        off = (1 - shrink) * 0.6
        pen.ellipse(cx + lx * off * a, cy + ly * off * b, a * shrink, b * (shrink + 0.02), _shade(p.skin, f))
    if p.beard:
        # A crescent along the jaw (face outline below, a shallower curve above) plus a moustache;
        # the mouth is drawn over it later.
        beard = _mix(p.hair, p.skin, 0.2)
        pen.arcs_polygon([(cx, cy, a * 1.005, b * 1.005, 5, 175),
                          (cx + p.yaw * 0.15 * a, cy + 0.08 * b, a * 0.82, b * 0.36, 180, 0)], beard)
        pen.ellipse(cx + p.yaw * 0.2 * a, cy + 0.5 * b, p.mouth_w * a * 0.62, 0.14 * b, beard)


def _draw_front_hair(pen: _Pen, p: FaceParams):
    cx, cy, a, b, h = p.cx, p.cy, p.a, p.b, p.hair
    top = {"buzz": 0.62, "short": 0.55, "bob": 0.5, "long": 0.52, "curly": 0.5}[p.hair_style]
    # Hair covers the face ellipse above a hairline that dips toward a side parting.
    ang_l = math.degrees(math.asin(top + 0.08 * p.parting))
    ang_r = math.degrees(math.asin(top - 0.08 * p.parting))
    ox, oy = pen.ellipse_xy(cx, cy, a * 1.01, b * 1.01, 180 + ang_l, 360 - ang_r)
    dip = (cx + 0.35 * p.parting * a, cy - (top - 0.06) * b)
    pen.path_polygon(np.append(ox, dip[0]), np.append(oy, dip[1]), h)
    if p.hair_style in ("bob", "long", "curly"):
        for side in (-1, 1):  # side locks framing the face
            x_out = cx + side * a * 1.04
            x_in = cx + side * a * 0.8
            pen.polygon([(x_out, cy - 0.6 * b), (x_in, cy - 0.55 * b), (x_out - side * 0.05 * a, cy + 0.3 * b),
                         (x_out + side * 0.08 * a, cy + 0.4 * b)], h)
    if p.bangs:  # a fringe with a zig-zag edge that stops above the brows
        n = 6
        low = p.eye_y - p.brow_lift - 0.09
        pts = [(cx - a * 0.9, cy + (low - 0.12) * b)]
        for k in range(n + 1):
            x = cx - a * 0.82 + 1.64 * a * k / n + p.yaw * 0.06 * a
            pts.append((x, cy + (low - (0.0 if k % 2 == 0 else 0.08)) * b))
        pts += [(cx + a * 0.9, cy + (low - 0.12) * b), (cx + a * 0.7, cy - 0.85 * b), (cx - a * 0.7, cy - 0.85 * b)]
        pen.polygon(pts, h)


def _draw_eyes(pen: _Pen, p: FaceParams):
    a, b = p.a, p.b
    shift = p.yaw * 0.22 * a
    ey = p.cy + p.eye_y * b
    brow_c = _shade(p.hair, 0.8) if p.hair[0] < 200 else _shade(p.hair, 0.6)
    line_c = _shade(p.skin, 0.35)
    for side in (-1, 1):
        # Foreshortening: the eye on the far side of a turned head is narrower.
        fore = 1 - 0.18 * max(0.0, side * p.yaw)
        ex = p.cx + side * p.eye_dx * a + shift * (1 - 0.3 * side * p.yaw)
        rw = 0.5 * p.eye_w * a * fore
        # Smiling narrows the eyes (the Duchenne smile's raised cheeks).
        rh = rw * p.eye_open / fore * (0.82 if p.smiling else 1.0)
        pen.ellipse(ex, ey, rw * 1.08, rh * 1.15, line_c)
        pen.ellipse(ex, ey, rw, rh, (246, 244, 240))
        ir = rh * 0.95
        ix = ex + p.gaze * (rw - ir) * 0.6
        pen.circle(ix, ey, ir, p.iris)
        pen.circle(ix, ey, ir * 0.5, (12, 10, 10))
        pen.circle(ix - ir * 0.35, ey - ir * 0.35, ir * 0.22, (255, 255, 255))
        by = ey - p.brow_lift * b
        inner, outer = ex - side * rw * 1.05, ex + side * rw * 1.15
        pen.line([(inner, by + p.brow_tilt * b), ((inner + outer) / 2, by - 0.03 * b), (outer, by + 0.02 * b)],
                 brow_c, p.brow_w * a)
        if p.glasses:
            pen.ellipse_outline(ex, ey, rw * 1.55, rw * 1.25, p.glasses_colour, 0.045 * a)
    if p.glasses:
        left = p.cx - p.eye_dx * a + shift + 0.5 * p.eye_w * a * 1.55
        right = p.cx + p.eye_dx * a + shift - 0.5 * p.eye_w * a * 1.55
        pen.line([(left, ey - 0.04 * b), (right, ey - 0.04 * b)], p.glasses_colour, 0.045 * a)


def _draw_nose(pen: _Pen, p: FaceParams):
    a, b = p.a, p.b
    nx = p.cx + p.yaw * 0.3 * a
    top = p.cy + (p.eye_y + 0.08) * b
    tip = top + p.nose_len * b * 1.4
    side = 1 if math.cos(p.light_angle) < 0 else -1  # shadow on the side away from the light
    pen.polygon([(nx, top), (nx + side * 0.12 * a, tip), (nx - side * 0.02 * a, tip)], _shade(p.skin, 0.88))
    pen.arc(nx, tip - 0.03 * b, 0.13 * a, 0.06 * b, 20, 160, _shade(p.skin, 0.72), 0.035 * a)


def _draw_mouth(pen: _Pen, p: FaceParams):
    a, b = p.a, p.b
    mx = p.cx + p.yaw * 0.2 * a
    my = p.cy + 0.55 * b
    # Smiles are wider than neutral mouths, as in real faces; it also makes the attribute easy to see.
    hw = 0.5 * p.mouth_w * a * (1.2 if p.smiling else 0.85)
    inside = (70, 22, 28)
    line_c = _shade(p.lips, 0.45)
    if p.smiling and p.mouth_open:      # open grin: dark D-shape with a row of teeth
        pen.chord(mx, my - 0.05 * b, hw, 0.2 * b, 0, 180, p.lips)
        pen.chord(mx, my - 0.055 * b, hw * 0.88, 0.16 * b, 0, 180, inside)
        pen.chord(mx, my - 0.055 * b, hw * 0.86, 0.065 * b, 0, 180, (240, 238, 230))
    elif p.smiling:                     # closed smile: upturned lips and a curved mouth line
        pen.chord(mx, my - 0.06 * b, hw, 0.16 * b, 0, 180, p.lips)
        pen.chord(mx, my - 0.095 * b, hw * 0.95, 0.08 * b, 0, 180, _shade(p.skin, 0.97))
        pen.arc(mx, my - 0.08 * b, hw * 0.98, 0.1 * b, 5, 175, line_c, 0.045 * a)
    elif p.mouth_open:                  # surprised / talking: small open oval
        pen.ellipse(mx, my, hw * 0.6, 0.1 * b, p.lips)
        pen.ellipse(mx, my, hw * 0.42, 0.065 * b, inside)
    else:                               # neutral: straight closed lips
        pen.ellipse(mx, my, hw * 0.9, 0.05 * b, p.lips)
        pen.line([(mx - hw * 0.88, my), (mx + hw * 0.88, my)], line_c, 0.03 * a)


_GRADIENT_BINS = 32


@lru_cache(maxsize=4 * _GRADIENT_BINS)
def _gradient_mask(size: int, angle_bin: int) -> Image.Image:
    """'L' ramp 0..255 across the canvas along one of _GRADIENT_BINS directions (cached; speed only)."""
    ang = math.pi * (angle_bin / _GRADIENT_BINS - 0.5)
    ramp = np.linspace(-0.5, 0.5, size)
    t = math.cos(ang) * ramp[None, :] + math.sin(ang) * ramp[:, None]
    t = (t - t.min()) / (t.max() - t.min())
    return Image.fromarray(np.round(t * 255).astype(np.uint8), "L")


def _background(p: FaceParams, size: int) -> Image.Image:
    angle_bin = int((p.bg_angle / math.pi + 0.5) * _GRADIENT_BINS) % _GRADIENT_BINS
    top = Image.new("RGB", (size, size), p.bg_top)
    bottom = Image.new("RGB", (size, size), p.bg_bottom)
    return Image.composite(bottom, top, _gradient_mask(size, angle_bin))


@lru_cache(maxsize=8)
def _light_basis(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ramp = np.linspace(-1, 1, resolution, dtype=np.float32)
    x, y = ramp[None, :, None], ramp[:, None, None]
    return x, y, 1.0 - 0.08 * (x * x + y * y)  # the last term: a mild vignette


def _apply_lighting(img: np.ndarray, p: FaceParams) -> np.ndarray:
    """Soft directional light, multiplicative; smooth, so applying it after downsampling is exact enough."""
    x, y, vignette = _light_basis(img.shape[0])
    gain = vignette + p.light_strength * (math.cos(p.light_angle) * x + math.sin(p.light_angle) * y)
    return np.clip(img * gain + 0.5, 0, 255).astype(np.uint8)


def render_face_params(p: FaceParams, resolution: int) -> np.ndarray:
    """Draw one face at ``resolution`` px; uint8 H x W x 3 RGB."""
    ss = supersample_factor(resolution)
    size = resolution * ss
    img = _background(p, size)
    pen = _Pen(img, size)
    # Roll tilts the head about the chin; neck and shoulders stay put.
    pen.rotate(p.roll, (p.cx, p.cy + 0.85 * p.b))
    _draw_back_hair(pen, p)
    pen.rotate(0.0, (p.cx, p.cy))
    _draw_body(pen, p)
    pen.rotate(p.roll, (p.cx, p.cy + 0.85 * p.b))
    _draw_ears(pen, p)
    _draw_face(pen, p)
    _draw_front_hair(pen, p)
    _draw_eyes(pen, p)
    _draw_nose(pen, p)
    _draw_mouth(pen, p)
    # Lanczos resolve of the supersamples: sharper than a box average, no jaggies on thin strokes.
    small = np.asarray(img.resize((resolution, resolution), Image.LANCZOS), dtype=np.float32)
    return _apply_lighting(small, p)


def _check(indices: Iterable[int], resolution: int) -> list[int]:
    if not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise ValueError(f"resolution must be an integer >= 8, got {resolution!r}")
    idx = [int(i) for i in indices]
    if any(i < 0 for i in idx):
        raise ValueError("indices must be non-negative")
    return idx


def render_faces(indices: Sequence[int] | Iterable[int], resolution: int, seed: int = 0) -> np.ndarray:
    """Render faces ``indices`` of dataset ``seed``: uint8 array (len(indices), resolution, resolution, 3), RGB.

    Each image depends only on (seed, index, resolution), not on the other indices or their order.
    """
    idx = _check(indices, resolution)
    out = np.empty((len(idx), resolution, resolution, 3), np.uint8)
    for k, i in enumerate(idx):
        out[k] = render_face_params(sample_face_params(seed, i), resolution)
    return out


def face_attributes(indices: Sequence[int] | Iterable[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Binary attributes the renderer used for each index: {name: uint8 array (len(indices),)}.

    Names are ``ATTRIBUTE_NAMES``; the values match what ``render_faces`` draws for the same seed.
    """
    idx = _check(indices, 8)
    rows = [params_attributes(sample_face_params(seed, i)) for i in idx]
    return {name: np.array([r[name] for r in rows], np.uint8) for name in ATTRIBUTE_NAMES}


def preview_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Tile N x H x W x 3 images into a grid with a 2 px white gutter."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = images[k]
    return grid


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a preview grid of the built-in synthetic faces.")
    ap.add_argument("--out", type=str, default="synthetic_preview.png", help="output PNG path")
    ap.add_argument("--resolution", type=int, default=64, choices=(16, 32, 64, 128), help="face size in px")
    ap.add_argument("--grid", type=int, default=8, help="rows and columns of the square grid")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    ap.add_argument("--start", type=int, default=0, help="first face index")
    args = ap.parse_args(argv)
    if args.grid < 1:
        raise SystemExit("--grid must be >= 1")
    faces = render_faces(range(args.start, args.start + args.grid ** 2), args.resolution, args.seed)
    Image.fromarray(preview_grid(faces, args.grid)).save(args.out)
    print(f"wrote {args.out} ({args.grid}x{args.grid} faces at {args.resolution}px)")


if __name__ == "__main__":
    main()
