"""Face data: the fixed held-out split, ``load_face_data``, the data flags and device batches.

One ``--data`` flag picks the source (read and cached by ``utils.data_sources``):
  * ``synthetic`` (default): procedurally drawn faces (utils/synthetic.py); no download.
  * ``celeba``: torchvision's CelebA under ``--data-root`` (its own train/test split; ``--download`` opt-in).
  * any folder: images found recursively (jpg/jpeg/png/webp/bmp), e.g. the output of align_faces.py.

A fixed held-out split (for FID) is chosen by hashing file names, written to a manifest,
and never trained on.  Training batches are sliced from the uint8 tensor with a seeded
per-epoch permutation (``Batches``), which makes the data position part of resume state.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.argtypes import nonneg_int, positive_int
from utils.data_sources import DataError, celeba_sets, default_cache_dir, folder_set, list_images, synthetic_set


# ---------------------------------------------------------------------------------------------
# Held-out split
# ---------------------------------------------------------------------------------------------

def _name_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def heldout_indices(names: list[str], n_real: int, max_fraction: float = 0.5) -> np.ndarray:
    """Deterministic held-out subset: the ``n`` names with the smallest SHA-1, n = min(n_real, max_fraction·N).

    Hashing names (not positions) keeps an image's split fixed when files are added or removed.
    """
    n = int(min(n_real, max_fraction * len(names)))
    order = sorted(range(len(names)), key=lambda i: _name_hash(names[i]))
    return np.array(sorted(order[:n]), dtype=np.int64)


def aligned_output_names(sources: list[str]) -> dict[str, str]:
    """align_faces.py's naming: relative source path → relative PNG path; a/b.jpg → a/b.png, or
    a/b.jpg → a/b.jpg.png when another source shares the stem a/b (e.g. a/b.png → a/b.png.png)."""
    stems = Counter(str(Path(s).with_suffix("")) for s in sources)
    return {s: str(Path(s).with_suffix(".png")) if stems[str(Path(s).with_suffix(""))] == 1 else s + ".png"
            for s in sources}


def combined_heldout_mask(combined: str, combined_names: list[str], source: str,
                          held_names: list[str]) -> np.ndarray:
    """True for each combined image whose aligned counterpart is held out (it must not be trained on).

    A combined file matches when the stem (name minus its last extension) of the name align_faces.py gives it
    is a held-out stem.  Names come from the full listing, as in the aligner, so undecodable files still count
    for name clashes.  A source folder nested inside the combined one holds the aligned images themselves
    (the aligner skips it); those are matched by their name relative to the source.
    """
    root = Path(combined).resolve()
    held = set(held_names)
    held_stems = {str(Path(h).with_suffix("")) for h in held}
    try:
        nested = Path(source).resolve().relative_to(root).as_posix() + "/" if Path(source).is_dir() else None
    except ValueError:
        nested = None
    listing = [p.relative_to(root).as_posix() for p in list_images(root)]
    out = aligned_output_names([n for n in listing if not (nested and n.startswith(nested))])
    mask = np.zeros(len(combined_names), bool)
    for i, n in enumerate(combined_names):
        if nested and n.startswith(nested):
            mask[i] = n[len(nested):] in held
        else:
            mask[i] = n in out and str(Path(out[n]).with_suffix("")) in held_stems
    return mask


@dataclass
class FaceData:
    train: torch.Tensor       # uint8 N×3×R×R
    heldout: torch.Tensor     # uint8 M×3×R×R — FID reference, never trained on
    info: dict

    def summary(self) -> str:
        sk = self.info.get("skipped", {})
        skipped = ", ".join(f"{v} {k}" for k, v in sorted(sk.items())) if sk else "none"
        excluded = self.info.get("combined_excluded")
        combined = (f"; combined: {excluded} held-out original(s) excluded from training"
                    if excluded is not None else "")
        return (f"data {self.info['source']} @ {self.info['resolution']}px: {self.info['num_train']} train, "
                f"{self.info['num_heldout']} held-out (split {self.info['split_sha256'][:12]}){combined}; "
                f"skipped: {skipped}")


def load_face_data(source: str = "synthetic", resolution: int = 64, *, n_real: int = 5000, cache_dir=None,
                   synthetic_size: int = 15000, seed: int = 0, combined: str | None = None, download: bool = False,
                   data_root: str | None = None, crop: str = "center", write_manifest: bool = True) -> FaceData:
    """Load a source as uint8 tensors with its fixed held-out split (see module docstring).

    ``combined``: a second source (typically raw photos) whose images are ADDED to the training set only
    (plan 1D: aligned + raw mixed); the held-out split always comes from ``source``, and combined images
    that are the originals of held-out ones (see ``combined_heldout_mask``) are left out and counted in
    ``info["combined_excluded"]``.
    ``seed`` only affects the synthetic renderer (the split is by name hash, independent of any seed).
    """
    from utils.export import atomic_write_json

    if resolution < 8 or resolution & (resolution - 1):
        raise DataError(f"resolution must be a power of two ≥ 8, got {resolution}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if source == "celeba":
        train_set, pool = celeba_sets(data_root, resolution, crop, download, cache)
        held = heldout_indices(pool.names, n_real, max_fraction=1.0)
        train_imgs, train_names = train_set.images, train_set.names
        held_imgs, held_names = pool.images[held], [pool.names[i] for i in held]
        skipped = Counter(train_set.skipped) + Counter(pool.skipped)
    else:
        raw = (synthetic_set(synthetic_size, resolution, seed, cache) if source == "synthetic"
               else folder_set(source, resolution, crop, cache))
        if len(raw.names) < 2:
            raise DataError(f"{source}: only {len(raw.names)} usable image(s) (skipped: {raw.skipped or 'none'})")
        held = heldout_indices(raw.names, n_real)
        mask = np.ones(len(raw.names), bool)
        mask[held] = False
        train_imgs, train_names = raw.images[mask], [n for n, m in zip(raw.names, mask) if m]
        held_imgs, held_names = raw.images[held], [raw.names[i] for i in held]
        skipped = Counter(raw.skipped)
    excluded = 0
    if combined:
        extra = folder_set(combined, resolution, crop, cache)
        keep = ~combined_heldout_mask(combined, extra.names, source, held_names)
        excluded = int((~keep).sum())
        train_imgs = np.concatenate([train_imgs, extra.images[keep]])
        train_names = train_names + [f"combined:{n}" for n, k in zip(extra.names, keep) if k]
        skipped += Counter({f"combined {k}": v for k, v in extra.skipped.items()})
    split_sha = hashlib.sha256("\n".join(held_names).encode()).hexdigest()
    src_id = source if source in ("synthetic", "celeba") else str(Path(source).resolve())
    info = {"source": src_id, "resolution": resolution, "crop": crop, "num_train": len(train_names),
            "num_heldout": len(held_names), "split_sha256": split_sha, "skipped": dict(skipped),
            "combined": str(Path(combined).resolve()) if combined else None,
            "combined_excluded": excluded if combined else None,
            "synthetic_size": synthetic_size if source == "synthetic" else None,
            "synthetic_seed": seed if source == "synthetic" else None}
    if write_manifest:
        manifest = cache / "splits" / f"{split_sha[:16]}.json"
        if not manifest.exists():
            atomic_write_json(manifest, {"source": src_id, "heldout": held_names, "split_sha256": split_sha})
        info["manifest_path"] = str(manifest)
    return FaceData(torch.from_numpy(np.ascontiguousarray(train_imgs)),
                    torch.from_numpy(np.ascontiguousarray(held_imgs)), info)


# ---------------------------------------------------------------------------------------------
# Flags and batches
# ---------------------------------------------------------------------------------------------

def add_data_args(parser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data", type=str, default="synthetic",
                   help="'synthetic' (built-in procedural faces, default), 'celeba' (torchvision CelebA), "
                        "or a folder of images (recursive), e.g. the output of align_faces.py")
    g.add_argument("--data-root", type=str, default=None, help="root folder for --data celeba")
    g.add_argument("--download", action="store_true", help="allow torchvision to download CelebA (opt-in)")
    g.add_argument("--combined", type=str, default=None,
                   help="second image folder mixed into the TRAINING set only (plan 1D: aligned + raw)")
    g.add_argument("--crop", type=str, default="center", choices=["center", "none"],
                   help="square center crop before resizing, or squash the whole image")
    g.add_argument("--n-real", type=nonneg_int, default=5000,
                   help="held-out real images for FID (capped at half of a folder source); never trained on")
    g.add_argument("--synthetic-size", type=positive_int, default=15000, help="number of images for --data synthetic")
    g.add_argument("--cache-dir", type=str, default=None,
                   help="preprocessing cache (default $FACEGEN_CACHE or ~/.cache/facegen)")


def face_data_from_args(args, write_manifest: bool = True) -> FaceData:
    return load_face_data(args.data, args.resolution, n_real=args.n_real, cache_dir=args.cache_dir,
                          synthetic_size=args.synthetic_size, seed=getattr(args, "data_seed", 0),
                          combined=args.combined, download=args.download, data_root=args.data_root,
                          crop=args.crop, write_manifest=write_manifest)


def heldout_from_train_config(tc: dict, resolution: int):
    """Rebuild the training data's held-out split from the flags stored in the export (the names of add_data_args)."""
    cache_dir = tc.get("cache_dir")
    return load_face_data(tc.get("data", "synthetic"), int(resolution), n_real=int(tc.get("n_real", 5000)),
                          cache_dir=cache_dir if cache_dir and Path(cache_dir).is_dir() else None,
                          synthetic_size=int(tc.get("synthetic_size", 15000)), seed=int(tc.get("data_seed", 0)),
                          data_root=tc.get("data_root"), crop=tc.get("crop", "center"))


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]."""
    return x_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255] with rounding (the inverse of to_float on the uint8 grid)."""
    return x.detach().float().add(1.0).mul(127.5).round().clamp_(0, 255).to(torch.uint8)


class Batches:
    """Seeded, sharded, resumable batches sliced from an in-memory uint8 tensor.

    Epoch e uses permutation randperm(N, seed·1000003 + e); global batch b is perm[b·B:(b+1)·B] and
    process r takes its r-th equal slice of it.  The last partial batch is dropped so shapes stay static
    (CUDA graphs / torch.compile stay valid).  State = (epoch, batch index): enough to resume exactly.

    Test hook: ``FACEGEN_INJECT_NAN_AT=3,7`` makes the float batches at those stream positions
    (epoch·steps_per_epoch + batch index, 0-based) all NaN, so tests exercise the trainers' real
    non-finite guards end to end.  ``FACEGEN_INJECT_OOM_AT=5`` raises torch's CUDA out-of-memory error when
    the batch at that position is drawn (the out-of-memory path, on machines without a GPU).  Unset (always,
    outside tests) they cost nothing.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1,
                 device: torch.device | str = "cpu", on_device: bool = True, labels: torch.Tensor | None = None):
        if batch_size % world:
            raise DataError(f"--batch-size {batch_size} must be divisible by the number of processes ({world})")
        if len(images) < batch_size:
            raise DataError(f"only {len(images)} training images, fewer than --batch-size {batch_size}")
        self.device = torch.device(device)
        # Holding the whole uint8 set on the GPU removes host→device copies from the step (CelebA-64 ≈ 2.5 GB).
        self.images = images.to(self.device) if on_device else images
        if labels is not None and len(labels) != len(images):
            raise DataError(f"{len(labels)} labels for {len(images)} training images")
        # Per-image class labels (train_gan.py --cond-attr): sliced with the images' indices, so next() yields pairs.
        self.labels = None if labels is None else labels.to(self.images.device)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.local_batch = batch_size // world
        self.steps_per_epoch = len(images) // batch_size
        self.epoch, self.index = 0, 0
        self._perm = None
        self._nan_at = _positions_from_env("FACEGEN_INJECT_NAN_AT")
        self._oom_at = _positions_from_env("FACEGEN_INJECT_OOM_AT")

    def _permutation(self) -> torch.Tensor:
        if self._perm is None or self._perm[0] != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            self._perm = (self.epoch, torch.randperm(len(self.images), generator=g).to(self.images.device))
        return self._perm[1]

    def _next_indices(self) -> torch.Tensor:
        """Indices of this process's next local batch; advances the position."""
        if self.index >= self.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        start = self.index * self.batch_size + self.rank * self.local_batch
        idx = self._permutation()[start:start + self.local_batch]
        self.index += 1
        return idx

    def next_uint8(self) -> torch.Tensor:
        return self._take(self.images, self._next_indices())

    def _take(self, tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return tensor[idx].to(self.device, non_blocking=True)

    def next(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Next local batch as float in [-1, 1] on the device; with ``labels``, the pair (images, their labels)."""
        idx = self._next_indices()
        x = to_float(self._take(self.images, idx))
        if self._nan_at or self._oom_at:
            position = self.epoch * self.steps_per_epoch + self.index - 1
            if position in self._nan_at:
                x.fill_(float("nan"))
            if position in self._oom_at:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB "
                                                  f"(injected by FACEGEN_INJECT_OOM_AT at batch {position})")
        return x if self.labels is None else (x, self._take(self.labels, idx))

    def state_dict(self) -> dict:
        # "world" is informational: the stream of global batches does not depend on the process count.
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "batch_size": self.batch_size,
                "n": len(self.images), "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n") != len(self.images) or state.get("batch_size") != self.batch_size:
            raise DataError(f"resume state was made with {state.get('n')} images / batch {state.get('batch_size')}, "
                            f"now {len(self.images)} / {self.batch_size}: the data or batch size changed")
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
        self._perm = None


def _positions_from_env(name: str) -> frozenset[int]:
    text = os.environ.get(name, "")
    try:
        return frozenset(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise DataError(f"{name} must be comma-separated integers, got {text!r}") from None
