"""Saving images: grids (PNG, never JPEG), single samples, GIF strips."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from utils.data import to_uint8


def make_grid_uint8(images: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """N×3×H×W (float in [-1,1] or uint8) → H'×W'×3 uint8 grid."""
    x = images if images.dtype == torch.uint8 else to_uint8(images)
    x = x.cpu()
    n, c, h, w = x.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = \
            x[i].permute(1, 2, 0).numpy()
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    from utils.export import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    return save_png(make_grid_uint8(images, nrow), path)


def save_gif(frames: list[np.ndarray], path: str | Path, duration_ms: int = 80, loop: bool = True) -> Path:
    """Looping GIF from H×W×3 uint8 frames (a ping-pong loop is the caller's choice)."""
    from PIL import Image

    from utils.export import atomic_write_bytes

    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0 if loop else 1)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
