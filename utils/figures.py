"""Figure pieces shared by compare.py and explore_latent.py: latent paths (slerp), image rows with text labels,
ping-pong animation frames, enlargement of tiny images, and nearest-neighbour search."""
from __future__ import annotations

import math

import numpy as np
import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative latents) of flattened vectors.

    a, b: N×D (→ N×T×D) or D (→ T×D); t: T values in [0, 1].  Gaussian latents concentrate on a sphere, so the
    straight line between two of them passes through improbably short vectors; the great circle does not.
    Computed in float64 so that nearly parallel endpoints keep their norm.
    """
    if a.dim() == 1:
        return slerp(a[None], b[None], t)[0]
    a64, b64, t64 = a.double(), b.double(), t.double().view(1, -1, 1)
    cos = ((a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1)).clamp_min(1e-12)).clamp(-1, 1)
    omega = torch.acos(cos).view(-1, 1, 1)
    so = torch.sin(omega)
    lerp = (1 - t64) * a64[:, None] + t64 * b64[:, None]
    sl = (torch.sin((1 - t64) * omega) * a64[:, None] + torch.sin(t64 * omega) * b64[:, None]) / so.clamp_min(1e-12)
    return torch.where(so.abs() < 1e-6, lerp, sl).to(a.dtype)   # parallel endpoints: no division by sin(0)


def enlarge(images: torch.Tensor, min_side: int = 48) -> torch.Tensor:
    """Nearest-neighbour enlargement of tiny images (16–32 px smoke runs) so faces and labels stay visible."""
    f = max(1, math.ceil(min_side / images.shape[-1]))
    return images if f == 1 else images.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def labelled_rows(strips: list[np.ndarray], labels: list[str], pad: int = 4) -> np.ndarray:
    """Stack H×W×3 uint8 strips vertically with a text label left of each (the margin fits the longest label)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = max(probe.textbbox((0, 0), s, font=font)[2] for s in labels) + 2 * pad
    width = margin + max(s.shape[1] for s in strips)
    height = sum(s.shape[0] for s in strips)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for strip, label in zip(strips, labels):
        canvas.paste(Image.fromarray(strip), (margin, y))
        box = draw.textbbox((0, 0), label, font=font)
        draw.text((pad, y + (strip.shape[0] - (box[3] - box[1])) // 2 - box[1]), label, fill=(0, 0, 0), font=font)
        y += strip.shape[0]
    return np.asarray(canvas)


def ping_pong_frames(paths: torch.Tensor) -> list[np.ndarray]:
    """Animation frames of R paths of S images each (R×S×3×H×W): frame j shows image j of every path side by side;
    played forth and back so that the loop has no jump."""
    from utils.images import make_grid_uint8

    frames = [make_grid_uint8(paths[:, j], nrow=paths.shape[0]) for j in range(paths.shape[1])]
    return frames + frames[-2:0:-1]


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances Q×k, indices Q×k) of the k nearest rows of ``bank`` (L2), nearest first, over bank chunks to
    bound memory."""
    best_d = torch.full((len(queries), 0), float("inf"), dtype=queries.dtype)
    best_i = torch.zeros((len(queries), 0), dtype=torch.long)
    for start in range(0, len(bank), chunk):
        d = torch.cdist(queries, bank[start:start + chunk])
        best_d = torch.cat([best_d, d], 1)
        best_i = torch.cat([best_i, torch.arange(start, start + d.shape[1]).expand(len(queries), -1)], 1)
        keep = best_d.topk(min(k, best_d.shape[1]), dim=1, largest=False)
        best_d, best_i = keep.values, best_i.gather(1, keep.indices)
    return best_d, best_i
