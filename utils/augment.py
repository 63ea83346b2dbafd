"""Batched, on-device data augmentation with per-sample random parameters.

``torchvision.transforms.v2`` applied to a batch tensor draws ONE set of
parameters for the whole batch (every image flipped, or none).  Here every op is
written for a batch: flips with ``torch.where``, rotation and resized crop with
one ``affine_grid``/``grid_sample`` call, colour ops with per-sample factors.
The colour ops and the flip reproduce ``torchvision.transforms.v2.functional``
(``horizontal_flip``, ``adjust_brightness``, ``adjust_contrast``,
``adjust_saturation``, ``autocontrast``) applied image by image with the same
parameters; ``tests/test_augment.py`` checks this.

Images are float ``N x 3 x H x W`` in [-1, 1] (the training convention); they
are mapped to [0, 1] internally so that the torchvision clamping semantics hold.

Presets (``describe_presets()`` prints them for ``--help``):

* ``none``            identity.
* ``flip``            horizontal flip, p = 0.5 per sample.
* ``flip-rot-jitter`` flip p = 0.5; rotation U(-5, 5) degrees; brightness,
                      contrast factors U(0.9, 1.1); saturation U(0.95, 1.05).
* ``deluxe``          (s001) RandomResizedCrop with area scale U(0.8, 1.0)
                      and aspect ratio log-U(0.9, 1.1) resized back to H x W;
                      flip p = 0.5; autocontrast p = 0.5.

Fixed order of ops: resized crop -> flip -> rotation -> brightness -> contrast
-> saturation -> autocontrast (torchvision's ColorJitter shuffles its colour
ops per call; a fixed order keeps params reproducible and easy to test).

Edge handling: rotation and crop sample with ``padding_mode='reflection'``, so a
rotated image's corners are filled with mirrored content rather than black
triangles that a generator would learn to reproduce.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PRESETS = ("none", "flip", "flip-rot-jitter", "deluxe")

# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)


class AugmentError(ValueError):
    """Bad preset name or input tensor; the message is one line for the user."""


@dataclass(frozen=True)
class AugmentConfig:
    flip_p: float = 0.0
    rotate_deg: float = 0.0                      # rotation ~ U(-rotate_deg, rotate_deg), counter-clockwise
    brightness: float = 0.0                      # factor ~ U(1 - b, 1 + b), as ColorJitter(brightness=b)
    contrast: float = 0.0
    saturation: float = 0.0
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop area fraction range; None = no crop
    crop_ratio: tuple[float, float] = (0.9, 1.1)   # width / height range, sampled log-uniformly
    autocontrast_p: float = 0.0


PRESET_CONFIGS = {
    "none": AugmentConfig(),
    "flip": AugmentConfig(flip_p=0.5),
    "flip-rot-jitter": AugmentConfig(flip_p=0.5, rotate_deg=5.0, brightness=0.1, contrast=0.1, saturation=0.05),
    "deluxe": AugmentConfig(flip_p=0.5, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), autocontrast_p=0.5),
}

_DESCRIPTIONS = {
    "none": "no augmentation",
    "flip": "horizontal flip p=0.5 per sample",
    "flip-rot-jitter": "flip p=0.5, rotate U(-5,5) deg (reflect edges), brightness/contrast x U(0.9,1.1), "
                       "saturation x U(0.95,1.05)",
    "deluxe": "resized crop area U(0.8,1.0) aspect log-U(0.9,1.1) back to HxW, flip p=0.5, autocontrast p=0.5",
}


def describe_presets() -> str:
    """One line per preset, for argparse help / epilog text."""
    return "\n".join(f"{name}: {_DESCRIPTIONS[name]}" for name in PRESETS)


# ----------------------------------------------------------------------------------------------
# Parameter sampling
# ----------------------------------------------------------------------------------------------

def _uniform(n: int, lo: float, hi: float, generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def sample_params(config: AugmentConfig, n: int, height: int, width: int, *,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                  ) -> dict[str, torch.Tensor]:
    """Per-sample parameters for a batch of ``n`` images of ``height x width``.

    Keys appear only for enabled ops: ``flip`` (bool), ``angle`` (degrees),
    ``brightness``/``contrast``/``saturation`` (factors), ``crop`` (n x 4: top,
    left, height, width in pixels, fractional), ``autocontrast`` (bool).
    Tensors live on the generator's device when one is given, else on ``device``.
    """
    dev = generator.device if generator is not None else torch.device(device)
    p: dict[str, torch.Tensor] = {}
    if config.crop_scale is not None:
        p["crop"] = _sample_crop(config, n, height, width, generator, dev)
    if config.flip_p > 0:
        p["flip"] = torch.rand(n, generator=generator, device=dev) < config.flip_p
    if config.rotate_deg > 0:
        p["angle"] = _uniform(n, -config.rotate_deg, config.rotate_deg, generator, dev)
    for name in ("brightness", "contrast", "saturation"):
        delta = getattr(config, name)
        if delta > 0:
            p[name] = _uniform(n, max(0.0, 1 - delta), 1 + delta, generator, dev)
    if config.autocontrast_p > 0:
        p["autocontrast"] = torch.rand(n, generator=generator, device=dev) < config.autocontrast_p
    return p


def _sample_crop(config: AugmentConfig, n: int, height: int, width: int, generator, dev) -> torch.Tensor:
    """RandomResizedCrop boxes (torchvision's scale/log-ratio recipe, continuous positions).

    torchvision retries out-of-bounds boxes up to 10 times; with these narrow
    ranges a side can exceed the image by at most sqrt(1.1) and is clamped instead.
    """
    area = _uniform(n, *config.crop_scale, generator, dev) * (height * width)
    log_ratio = _uniform(n, math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), generator, dev)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=width)
    h = torch.sqrt(area / ratio).clamp(max=height)
    top = torch.rand(n, generator=generator, device=dev) * (height - h)
    left = torch.rand(n, generator=generator, device=dev) * (width - w)
    return torch.stack([top, left, h, w], 1)


# ----------------------------------------------------------------------------------------------
# Batched ops on [0, 1] images
# ----------------------------------------------------------------------------------------------

def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luma, same arithmetic as torchvision's rgb_to_grayscale on float images."""
    r, g, b = x.unbind(1)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend: ratio * img1 + (1 - ratio) * img2, clamped to the valid range.
    f = _per_sample(factor, x)
    return (x * f + other * (1 - f)).clamp_(0, 1)


def flip_batch(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def brightness_batch(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factor, x)).clamp_(0, 1)


def contrast_batch(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def saturation_batch(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


def autocontrast_batch(x: torch.Tensor, apply: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample, per-channel min/max stretch to [0, 1]; flat channels are left as they are."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi == lo
    inv_scale = torch.where(flat, torch.ones_like(hi), hi - lo)
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    out = ((x - lo) / inv_scale).clamp_(0, 1)
    if apply is None:
        return out
    return torch.where(apply.to(x.device).view(-1, 1, 1, 1), out, x)


def _rotation_theta(angle_deg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x 3 x 3 map from output to input normalised coords for a counter-clockwise rotation about the centre.

    In pixel units (y down) the input point is [[c, -s], [s, c]] @ output; normalising x by W/2 and y by H/2
    scales the off-diagonal terms by the aspect ratio.
    """
    a = torch.deg2rad(angle_deg)
    c, s = torch.cos(a), torch.sin(a)
    theta = torch.zeros(len(a), 3, 3, dtype=a.dtype, device=a.device)
    theta[:, 0, 0] = c
    theta[:, 0, 1] = -s * height / width
    theta[:, 1, 0] = s * width / height
    theta[:, 1, 1] = c
    theta[:, 2, 2] = 1
    return theta


def _crop_theta(crop: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x 3 x 3 map that resamples box (top, left, h, w) onto the full output grid.

    Matches resize(crop) with bilinear, align_corners=False, for output pixels away from the box edge.
    """
    top, left, h, w = crop.unbind(1)
    theta = torch.zeros(len(crop), 3, 3, dtype=crop.dtype, device=crop.device)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    theta[:, 2, 2] = 1
    return theta


def warp_batch(x: torch.Tensor, *, crop: torch.Tensor | None = None, angle: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Resized crop, then rotation, in ONE bilinear resampling (reflection padding)."""
    n, _, h, w = x.shape
    theta = torch.eye(3, dtype=torch.float32, device=x.device).expand(n, 3, 3)
    if crop is not None:
        theta = _crop_theta(crop.to(x.device, torch.float32), h, w)
    if angle is not None:
        # Output -> rotated-output coords -> crop coords -> input coords.
        theta = theta @ _rotation_theta(angle.to(x.device, torch.float32), h, w)
    grid = F.affine_grid(theta[:, :2].to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_params(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply whichever ops ``params`` holds to ``x`` (float N x C x H x W in [0, 1]) in the fixed order."""
    if "crop" in params:
        x = warp_batch(x, crop=params["crop"])
    if "flip" in params:
        x = flip_batch(x, params["flip"])
    if "angle" in params:
        x = warp_batch(x, angle=params["angle"])
    if "brightness" in params:
        x = brightness_batch(x, params["brightness"])
    if "contrast" in params:
        x = contrast_batch(x, params["contrast"])
    if "saturation" in params:
        x = saturation_batch(x, params["saturation"])
    if "autocontrast" in params:
        x = autocontrast_batch(x, params["autocontrast"])
    return x


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------

class Augment:
    """Callable batch augmenter: ``aug(x, generator=None) -> x'`` for x in [-1, 1], same shape/device/dtype."""

    def __init__(self, preset: str, config: AugmentConfig):
        self.preset = preset
        self.config = config

    @property
    def is_identity(self) -> bool:
        return self.config == AugmentConfig()

    def __repr__(self) -> str:
        return f"Augment({self.preset!r}: {_DESCRIPTIONS.get(self.preset, self.config)})"

    def sample_params(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        _check_input(x, needs_rgb=self.config.brightness + self.config.contrast + self.config.saturation > 0)
        n, _, h, w = x.shape
        return sample_params(self.config, n, h, w, generator=generator, device=x.device)

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic part: augment ``x`` in [-1, 1] with explicit ``params``."""
        _check_input(x, needs_rgb=any(k in params for k in ("brightness", "contrast", "saturation")))
        if set(params) <= {"flip"}:
            # A flip only moves pixels: skip the [0, 1] round trip so values stay bit-identical.
            return flip_batch(x, params["flip"]) if params else x
        dtype = x.dtype
        x01 = (x.float() + 1) * 0.5
        out = apply_params(x01, params)
        return (out * 2 - 1).clamp_(-1, 1).to(dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.is_identity:
            return x
        return self.apply(x, self.sample_params(x, generator))


def _check_input(x: torch.Tensor, needs_rgb: bool) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise AugmentError(f"augment expects a float N x C x H x W tensor in [-1, 1], got {got}")
    if needs_rgb and x.shape[1] != 3:
        raise AugmentError(f"colour augmentation needs 3 channels, got {x.shape[1]}")


def build_augment(preset: str) -> Augment:
    if preset not in PRESET_CONFIGS:
        raise AugmentError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")
    return Augment(preset, PRESET_CONFIGS[preset])
