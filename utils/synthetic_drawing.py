"""Drawing one synthetic face from its ``FaceParams``: PIL polygons on a supersampled canvas, a Lanczos
reduction to the output size, then soft lighting.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from utils.synthetic_params import FaceParams, mix_rgb


def supersample_factor(resolution: int) -> int:
    """Internal drawing scale: at least 128 px canvas so thin strokes survive at 16 px."""
    return max(2, math.ceil(128 / resolution))


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
        beard = mix_rgb(p.hair, p.skin, 0.2)
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
