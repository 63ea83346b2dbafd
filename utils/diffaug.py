"""Differentiable augmentation (DiffAugment, Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training").

The same random transformations are applied to every image the discriminator sees — real and generated, in
both the D and the G step — and they are differentiable, so the generator is trained through them.  Unlike
data augmentation of the real images alone (utils/augment.py), the generator is not pushed to produce
augmented-looking images.

Policies (comma separated, applied in this order), on images in [-1, 1]:

* ``color``: brightness + U(−0.5, 0.5); saturation × U(0, 2); contrast × U(0.5, 1.5), per image.
* ``translation``: integer shift by up to 1/8 of the size in each direction, zero (mid-grey) fill.
* ``cutout``: one square of half the size at a random position set to 0 (mid-grey).

Random numbers come from ``generator`` (or torch's global RNG when None, which keeps resume exact).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


class DiffAugmentError(ValueError):
    """Unknown policy name; one-line message."""


def parse_policy(text: str | None) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' / 'none' / None -> ()."""
    if not text or text.strip().lower() == "none":
        return ()
    names = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    bad = [n for n in names if n not in POLICIES]
    if bad:
        raise DiffAugmentError(f"unknown DiffAugment policy {', '.join(bad)!r}; choose from {', '.join(POLICIES)}")
    return tuple(p for p in POLICIES if p in names)   # canonical order, duplicates removed


def _rand(n: int, x: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, n: int, x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator, device=x.device)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand(n, x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, x, generator) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, x, generator) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(-sh, sh + 1, n, x, generator).view(n, 1, 1)
    dx = _randint(-sw, sw + 1, n, x, generator).view(n, 1, 1)
    # Gather from a 1-pixel zero-padded copy; indices that fall outside the image land on the padding.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)   # n×h×1
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)   # n×1×w
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)                                # n×(h+2)×(w+2)×c
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _randint(0, h + 1 - ch % 2, n, x, generator).view(n, 1, 1) - ch // 2
    left = _randint(0, w + 1 - cw % 2, n, x, generator).view(n, 1, 1) - cw // 2
    i = torch.arange(h, device=x.device).view(1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (i >= top) & (i < top + ch) & (j >= left) & (j < left + cw)               # n×h×w
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """``DiffAugment('color,translation,cutout')(x, generator=None) -> x'``; identity for an empty policy."""

    def __init__(self, policy: str | None):
        self.policy = parse_policy(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.policy) or 'none'})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for name in self.policy:
            x = _OPS[name](x, generator=generator)
        return x
