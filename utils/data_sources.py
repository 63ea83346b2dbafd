"""Face-data sources read into named uint8 arrays: robust decoding of one image, folder listing, the square
resize, and the on-disk uint8 cache of each source (a folder, the synthetic renderer, torchvision's CelebA).

Every source is decoded and resized ONCE into a uint8 array (N×3×R×R) cached on disk, keyed by the source's
contents, resolution and crop, so epochs never decode JPEGs again.  ``utils.data`` splits these arrays into
training and held-out images.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CACHE_VERSION = 1
MIN_SIDE = 8  # smaller images carry no usable face at any resolution we train


class BadImage(Exception):
    """An input file that cannot be used; ``str(e)`` is the short reason counted in summaries."""


class DataError(SystemExit):
    """A data problem the user must fix (missing folder, nothing usable). Exits with a one-line message."""

    def __init__(self, msg: str):
        super().__init__(f"error: {msg}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEGEN_CACHE", Path.home() / ".cache" / "facegen"))


# ---------------------------------------------------------------------------------------------
# Reading one image robustly
# ---------------------------------------------------------------------------------------------

def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode any supported image to uint8 RGB H×W×3, converting odd modes; raise BadImage(reason)."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise BadImage("is a directory")
    try:
        size = path.stat().st_size
    except OSError:
        raise BadImage("unreadable") from None
    if size == 0:
        raise BadImage("zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            with Image.open(path) as im:
                im.load()
                return _to_rgb_array(im)
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("too large (decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).lower()
        raise BadImage("truncated" if "truncat" in msg else "corrupt") from None


def _to_rgb_array(im) -> np.ndarray:
    from PIL import Image

    if min(im.size) < MIN_SIDE:
        raise BadImage(f"too small (<{MIN_SIDE}px)")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the type's range, not by clipping.
        a = np.asarray(im, dtype=np.float64)
        a = a / (65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0) * 255.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite on white so transparent pixels do not become arbitrary colours.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))  # covers L, 1, P, CMYK, YCbCr, RGB


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All files with an image extension under ``folder`` (recursive), sorted; missing/empty → DataError."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"--data must be 'synthetic', 'celeba' or a folder of images; {folder} is a file")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if not files:
        raise DataError(f"no images ({'/'.join(IMAGE_EXTS)}) found under {folder}")
    return files


def resize_square(img: np.ndarray, resolution: int, crop: str = "center") -> np.ndarray:
    """Center-crop to a square (``crop='center'``) or squash (``'none'``), then PIL-bicubic (antialiased) resize."""
    from PIL import Image

    h, w = img.shape[:2]
    if crop == "center" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top:top + s, left:left + s]
    im = Image.fromarray(img)
    if im.size != (resolution, resolution):
        im = im.resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(im)


# ---------------------------------------------------------------------------------------------
# Sources → named uint8 arrays (cached)
# ---------------------------------------------------------------------------------------------

@dataclass
class RawSet:
    names: list[str]          # stable identifiers (relative paths) — the split hashes these
    images: np.ndarray        # uint8 N×3×R×R
    skipped: dict = field(default_factory=dict)  # reason -> count


def _decode_folder(files: list[Path], root: Path, resolution: int, crop: str, workers: int) -> RawSet:
    from utils.progress import bars_enabled, track

    def work(p: Path):
        try:
            return resize_square(read_image_rgb(p), resolution, crop), None
        except BadImage as e:
            return None, str(e)

    names, arrays, skipped = [], [], Counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        # A bar only where decoding takes seconds, and like every bar only on a terminal or with FACEGEN_PROGRESS=1.
        for p, (arr, why) in track(zip(files, ex.map(work, files)), total=len(files), desc=f"decode {root.name}",
                                   enabled=len(files) >= 2000 and bars_enabled()):
            if arr is None:
                skipped[why] += 1
            else:
                names.append(p.relative_to(root).as_posix())
                arrays.append(arr.transpose(2, 0, 1))
    images = np.stack(arrays) if arrays else np.zeros((0, 3, resolution, resolution), np.uint8)
    return RawSet(names, np.ascontiguousarray(images), dict(skipped))


def _cache_paths(cache_dir: Path, tag: str, key: str) -> tuple[Path, Path]:
    stem = cache_dir / f"{tag}-{key[:16]}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _cached(cache_dir: Path | None, tag: str, key_obj: dict, build) -> RawSet:
    """Load a RawSet from the cache or build and store it (atomically; concurrent builders are harmless)."""
    from utils.export import atomic_write_bytes, atomic_write_json

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()
    npy, meta = _cache_paths(cache_dir, tag, key)
    if npy.exists() and meta.exists():
        try:
            info = json.loads(meta.read_text())
            images = np.load(npy, mmap_mode="r")
            if images.shape[0] == len(info["names"]):
                return RawSet(info["names"], images, info.get("skipped", {}))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    raw = build()
    buf = io.BytesIO()
    np.save(buf, raw.images)
    atomic_write_bytes(npy, buf.getvalue())
    atomic_write_json(meta, {"key": key_obj, "names": raw.names, "skipped": raw.skipped})
    return raw


def folder_set(folder: str, resolution: int, crop: str, cache_dir) -> RawSet:
    root = Path(folder).resolve()
    files = list_images(root)
    # The key covers every file's name, size and mtime, so an edited folder is re-decoded.
    listing = [(p.relative_to(root).as_posix(), *_stat(p)) for p in files]
    key = {"v": CACHE_VERSION, "src": str(root), "res": resolution, "crop": crop,
           "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
    tag = f"{root.name}-{resolution}px"
    return _cached(cache_dir, tag, key, lambda: _decode_folder(files, root, resolution, crop, os.cpu_count() or 2))


def _stat(p: Path) -> tuple[int, int]:
    try:
        st = p.stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def synthetic_set(n: int, resolution: int, seed: int, cache_dir) -> RawSet:
    from utils.synthetic import RENDERER_MODULES, render_faces

    def build():
        imgs = render_faces(np.arange(n), resolution, seed=seed)
        return RawSet([f"synthetic/{seed}/{i:07d}" for i in range(n)], np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)))

    import PIL

    # Rasterisation can differ between Pillow versions, and the renderer's source defines the images.
    key = {"v": CACHE_VERSION, "src": "synthetic", "n": n, "res": resolution, "seed": seed,
           "renderer": [_module_hash(m) for m in RENDERER_MODULES], "pillow": PIL.__version__}
    return _cached(cache_dir, f"synthetic-s{seed}-{resolution}px", key, build)


def _module_hash(name: str) -> str:
    """Hash of a module's source, so editing the synthetic renderer invalidates its cache."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16] if spec and spec.origin else "none"


def celeba_sets(root: str | None, resolution: int, crop: str, download: bool, cache_dir) -> tuple[RawSet, RawSet]:
    """torchvision CelebA with its own split: 'train' for training, 'test' as the held-out pool."""
    import torchvision

    root = root or str(default_cache_dir() / "celeba")
    out = []
    for split in ("train", "test"):
        try:
            ds = torchvision.datasets.CelebA(root, split=split, target_type=[], download=download)
        except RuntimeError as e:
            raise DataError(f"CelebA not found under {root} ({str(e).splitlines()[0]}); pass --download to fetch it "
                            f"(needs internet) or --data-root DIR holding celeba/img_align_celeba") from None
        folder = Path(ds.root) / ds.base_folder / "img_align_celeba"

        def build(ds=ds, folder=folder):
            files = [folder / f for f in ds.filename]
            return _decode_folder(files, folder, resolution, crop, os.cpu_count() or 2)

        key = {"v": CACHE_VERSION, "src": "celeba", "root": str(Path(root).resolve()), "split": split,
               "res": resolution, "crop": crop, "n": len(ds)}
        out.append(_cached(cache_dir, f"celeba-{split}-{resolution}px", key, build))
    return out[0], out[1]
