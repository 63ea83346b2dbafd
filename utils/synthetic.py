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

``python -m utils.synthetic --out preview.png`` writes a preview grid.  Parameters are drawn in
``utils.synthetic_params`` and painted in ``utils.synthetic_drawing``.
"""
from __future__ import annotations

import argparse
import math
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from utils.synthetic_drawing import render_face_params
from utils.synthetic_params import ATTRIBUTE_NAMES, params_attributes, sample_face_params

# Bump when a change alters pixels, so caches keyed on it (utils.data) are rebuilt.
RENDERER_VERSION = 1
# The modules whose source decides the pixels: utils.data_sources keys its synthetic cache on all of them.
RENDERER_MODULES = ("utils.synthetic", "utils.synthetic_params", "utils.synthetic_drawing")


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
