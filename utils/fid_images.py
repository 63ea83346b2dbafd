"""clean-fid's image preprocessing and folder reading, reproduced exactly.

Exactness w.r.t. clean-fid (Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in GAN
Evaluation"): images are uint8, resized to 299² by PIL's bicubic filter *in float mode, per channel*
(``cleanfid.resize.make_resizer('PIL', False, 'bicubic', (299, 299))``), clipped to [0, 255] and fed to the
2015 TF Inception.  ``clean_resize`` performs that resize as two batched matrix products whose weights are
PIL's own (same filter, support, normalisation and horizontal-then-vertical order, float32 intermediate),
so it runs on the GPU and matches PIL bit for bit (tests check ``pil_clean_resize`` against it).
Folders are listed and decoded as clean-fid's folder reader does.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from utils.feature_nets import MetricsError, tensor_sha256

FEATURE_SIZE = 299
# Image extensions clean-fid's folder reader globs (case-sensitive, as in cleanfid.utils.EXTENSIONS; no .npy).
CLEANFID_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "JPEG", "JPG", "PNG")


# ---------------------------------------------------------------------------------------------
# clean-fid preprocessing: PIL bicubic resize in float mode
# ---------------------------------------------------------------------------------------------

def pil_clean_resize(img: np.ndarray, size: int = FEATURE_SIZE) -> np.ndarray:
    """Reference implementation (clean-fid's own resizer): uint8 H×W×3 -> float32 size×size×3 in [0, 255]."""
    from cleanfid.resize import make_resizer

    return make_resizer("PIL", False, "bicubic", (size, size))(img)


def _pil_bicubic(x: float, a: float = -0.5) -> float:
    # PIL's Resample.c bicubic_filter (Keys cubic with a = -0.5).
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


@lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """out×in float64 matrix of PIL's bicubic coefficients (Resample.c precompute_coeffs).

    When downscaling, PIL widens the filter by the scale factor (antialiasing); each row is normalised to 1.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    w = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C's cast does
        xmax = min(int(center + support + 0.5), in_size)
        k = np.array([_pil_bicubic((x - center + 0.5) / filterscale) for x in range(xmin, xmax)])
        total = k.sum()
        w[xx, xmin:xmax] = k / total if total != 0 else k
    return w


def clean_resize(images: torch.Tensor, size: int = FEATURE_SIZE) -> torch.Tensor:
    """Batched clean-fid resize: N×3×H×W values in [0, 255] (uint8 or float) -> float32 N×3×size×size.

    Horizontal pass, float32 rounding (PIL stores the intermediate image as 'F'), vertical pass, float32, clip:
    float64 accumulation as in PIL, so the result equals ``pil_clean_resize`` exactly on CPU and to float64
    rounding on GPU.  Runs on ``images.device``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"clean_resize expects N×3×H×W images, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    dev = images.device
    wx = torch.from_numpy(resize_weights(w, size)).to(dev)
    wy = torch.from_numpy(resize_weights(h, size)).to(dev)
    x = images.to(torch.float64)
    if w != size:  # PIL skips a pass whose size does not change
        x = (x @ wx.T).to(torch.float32).to(torch.float64)
    if h != size:
        x = (wy @ x).to(torch.float32)
    return x.to(torch.float32).clamp_(0, 255)


# ---------------------------------------------------------------------------------------------
# Folders (read exactly as clean-fid reads them)
# ---------------------------------------------------------------------------------------------

def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """clean-fid's file list: recursive, its extensions (case-sensitive), sorted by path, dot-files excluded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetricsError(f"image folder not found: {folder}")
    exts = set(CLEANFID_EXTENSIONS)
    files = sorted((p for p in folder.rglob("*") if p.suffix[1:] in exts and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)), key=str)
    if not files:
        raise MetricsError(f"no images ({', '.join(sorted(set(e.lower() for e in exts)))}) under {folder}")
    return files


def load_image_folder(folder: str | os.PathLike, limit: int | None = None) -> tuple[list[np.ndarray], dict]:
    """uint8 H×W×3 arrays decoded as clean-fid does (``Image.open(p).convert('RGB')``), plus provenance.

    Unreadable files are skipped and counted (clean-fid would crash on them).  The content sha256 covers the
    decoded pixels, so it identifies the reference set for the statistics cache.
    """
    from PIL import Image, UnidentifiedImageError

    files = list_image_files(folder)
    images, skipped = [], 0
    h = hashlib.sha256()
    for p in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            with Image.open(p) as im:
                arr = np.array(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            skipped += 1
            continue
        images.append(arr)
        h.update(str(arr.shape).encode() + arr.tobytes())
    if not images:
        raise MetricsError(f"no readable images under {folder} ({skipped} unreadable)")
    return images, {"folder": str(Path(folder).resolve()), "num_files": len(files), "n": len(images),
                    "skipped_unreadable": skipped, "pixels_sha256": h.hexdigest()}


def pixels_sha256(images: torch.Tensor) -> str:
    """Content hash of a uint8 image tensor (keys the reference-statistics cache)."""
    return tensor_sha256([images])
