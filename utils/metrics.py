"""The one metrics implementation: FID and KID (clean-fid 'clean' mode), precision/recall, density/coverage,
FD-DINOv2 (the same Fréchet distance on DINOv2 features), IS, LPIPS diversity; shareable reference statistics.

Used by ``evaluate.py`` and by the trainers' periodic FID (``FIDEvaluator``).

Exactness w.r.t. clean-fid (Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in GAN
Evaluation"): images are uint8, resized to 299² by PIL's bicubic filter *in float mode, per channel*
(``cleanfid.resize.make_resizer('PIL', False, 'bicubic', (299, 299))``), clipped to [0, 255] and fed to the
2015 TF Inception.  ``clean_resize`` performs that resize as two batched matrix products whose weights are
PIL's own (same filter, support, normalisation and horizontal-then-vertical order, float32 intermediate),
so it runs on the GPU and matches PIL bit for bit (tests check ``pil_clean_resize`` against it).
Statistics use clean-fid's formulas: ``np.mean``/``np.cov`` of float32 features, the same Fréchet distance
and the same KID estimator (subset sampling included).

Features come from ``utils.feature_nets``: clean-fid's Inception for reportable numbers, or a seeded random
'tiny' net for tests and CPU smoke runs (never comparable with Inception numbers); precision/recall may instead
use VGG-16 features (``evaluate.py --pr-features vgg16``).  Every metrics.json entry names its features.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from utils.feature_nets import (FeatureExtractor, MetricsError, load_feature_extractor,  # noqa: F401 (re-exported)
                                tensor_sha256)

FID_MODE = "clean"
FEATURE_SIZE = 299
# Image extensions clean-fid's folder reader globs (case-sensitive, as in cleanfid.utils.EXTENSIONS; no .npy).
CLEANFID_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "JPEG", "JPG", "PNG")
STATS_CACHE_VERSION = 1

ImagesLike = "torch.Tensor | Sequence[np.ndarray]"  # uint8 N×3×H×W tensor, or uint8 H×W×3 arrays of any sizes


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


# ---------------------------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------------------------

def _batches(images, batch_size: int):
    """Yield uint8 N×3×H×W tensors; a list of arrays is grouped into runs of equal size."""
    if isinstance(images, torch.Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    run: list[np.ndarray] = []
    for arr in images:
        if run and (arr.shape != run[0].shape or len(run) == batch_size):
            yield torch.from_numpy(np.stack(run)).permute(0, 3, 1, 2)
            run = []
        run.append(arr)
    if run:
        yield torch.from_numpy(np.stack(run)).permute(0, 3, 1, 2)


@torch.no_grad()
def extract(images, extractor: FeatureExtractor, *, batch_size: int = 64, device=None,
            classifier: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(features float32 N×dim, classifier logits N×1000 or None) of uint8 images, clean-resized on ``device``."""
    if device is None:
        device = next(extractor.parameters()).device
    feats, logits = [], []
    for batch in _batches(images, batch_size):
        x = clean_resize(batch.to(device), extractor.input_size)
        feats.append(extractor(x).float().cpu())
        if classifier is not None:
            logits.append(classifier(x).float().cpu())
    if not feats:
        raise MetricsError("no images to extract features from")
    return torch.cat(feats).numpy(), (torch.cat(logits).numpy() if classifier is not None else None)


def extract_features(images, extractor: FeatureExtractor, *, batch_size: int = 64, device=None) -> np.ndarray:
    """float32 N×dim features of uint8 images (tensor N×3×H×W or list of H×W×3 arrays)."""
    return extract(images, extractor, batch_size=batch_size, device=device)[0]


# ---------------------------------------------------------------------------------------------
# Statistics (clean-fid's formulas)
# ---------------------------------------------------------------------------------------------

def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) exactly as clean-fid computes them (float32 mean, float64 covariance)."""
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


FD_METHODS = ("sqrtm", "eigh")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, *, method: str = "sqrtm", device=None) -> float:
    """d² = |mu1 − mu2|² + Tr(S1 + S2 − 2 (S1 S2)^½) (Heusel et al. 2017).

    ``method='sqrtm'``: clean-fid's numerics exactly (scipy's matrix square root; tens of seconds at 2048-d on a
    small CPU).  ``method='eigh'``: the same trace via symmetric eigendecompositions,
    Tr((S1 S2)^½) = Σ √λ(S1^½ S2 S1^½), in float64 torch on ``device`` (a fraction of a second on a GPU; agrees
    with 'sqrtm' to ~1e-6 when there are more samples than feature dimensions).
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise MetricsError(f"feature statistics differ in size ({mu1.shape} vs {mu2.shape}); "
                           "were they made with different feature extractors?")
    if method not in FD_METHODS:
        raise MetricsError(f"unknown Fréchet-distance method {method!r}; choose from {', '.join(FD_METHODS)}")
    diff = mu1 - mu2
    tr_covmean = (_trace_sqrt_product_eigh(sigma1, sigma2, device) if method == "eigh"
                  else _trace_sqrt_product_sqrtm(sigma1, sigma2, eps))
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    from scipy import linalg

    with warnings.catch_warnings():
        # With fewer samples than feature dimensions the product is singular; scipy warns on every call,
        # while FIDEvaluator.metrics records that condition once in metrics.json instead.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            # Product might be almost singular: regularise, as clean-fid does.
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise MetricsError(f"FID: matrix square root has an imaginary component "
                               f"{np.max(np.abs(covmean.imag)):.3g}; too few samples for the feature dimension?")
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray, device) -> float:
    # S1 S2 is similar to the PSD matrix S1^½ S2 S1^½, so its eigenvalues are real and ≥ 0 (up to rounding).
    a = torch.as_tensor(sigma1, dtype=torch.float64, device=device)
    b = torch.as_tensor(sigma2, dtype=torch.float64, device=device)
    w, v = torch.linalg.eigh(a)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    m = root @ b @ root
    lam = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(lam.clamp_min(0).sqrt().sum())


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    if min(len(feats1), len(feats2)) < 2:
        raise MetricsError("FID needs at least 2 samples per set")
    return frechet_distance(*feature_statistics(feats1), *feature_statistics(feats2))


def kid(feats1: np.ndarray, feats2: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0, device=None) -> float:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel.

    Same estimator and subset draws as ``cleanfid.fid.kernel_distance`` after ``np.random.seed(seed)``
    (x from feats2, y from feats1, without replacement).  Kernel matrices are float32 products as in clean-fid,
    summed in float64; on a CUDA ``device`` they run in torch (numpy on CPU: torch's thread start-up dominates
    such small products there).
    """
    rng = np.random.RandomState(seed)
    n = feats1.shape[1]
    m = min(feats1.shape[0], feats2.shape[0], max_subset_size)
    if m < 2:
        raise MetricsError("KID needs at least 2 samples per set")
    f1 = np.ascontiguousarray(feats1, dtype=np.float32)
    f2 = np.ascontiguousarray(feats2, dtype=np.float32)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if on_gpu:
        f1, f2 = torch.from_numpy(f1).to(device), torch.from_numpy(f2).to(device)

    def kernel_sums(a, b, drop_diagonal):
        k = ((a @ b.T).double() / n + 1) ** 3 if on_gpu else (np.asarray(a @ b.T, np.float64) / n + 1) ** 3
        total = float(k.sum()) - (float(k.diagonal().sum()) if drop_diagonal else 0.0)
        return total

    t = 0.0
    for _ in range(num_subsets):
        x = f2[rng.choice(feats2.shape[0], m, replace=False)]
        y = f1[rng.choice(feats1.shape[0], m, replace=False)]
        a = kernel_sums(x, x, True) + kernel_sums(y, y, True)
        t += a / (m - 1) - kernel_sums(x, y, False) * 2 / m
    return t / num_subsets / m


@torch.no_grad()
def precision_recall(real_feats: np.ndarray, fake_feats: np.ndarray, *, k: int = 3, batch_size: int = 5000,
                     device=None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) on k-NN hypersphere manifolds.

    precision: fraction of fakes inside the real manifold (some real's ball of radius = its k-th NN distance);
    recall: fraction of reals inside the fake manifold.  Computed on whatever features are given (k=3 by
    default, as in the paper).  The paper and the StyleGAN2-ADA reference code use VGG-16 fc2 features;
    evaluate.py passes the FID network's Inception pool3 features unless ``--pr-features vgg16``, and every
    metrics.json entry records which (``features``).
    """
    dev = device or "cpu"
    real = torch.from_numpy(np.asarray(real_feats, np.float32)).to(dev)
    fake = torch.from_numpy(np.asarray(fake_feats, np.float32)).to(dev)
    if min(len(real), len(fake)) <= k:
        raise MetricsError(f"precision/recall with k={k} needs more than {k} samples per set")

    def kth_radii(manifold):
        return torch.cat([torch.cdist(manifold[i:i + batch_size], manifold).kthvalue(k + 1, dim=1).values
                          for i in range(0, len(manifold), batch_size)])

    def coverage(manifold, probes):
        radii = kth_radii(manifold)
        inside = [(torch.cdist(probes[i:i + batch_size], manifold) <= radii[None]).any(dim=1)
                  for i in range(0, len(probes), batch_size)]
        return float(torch.cat(inside).float().mean())

    return coverage(real, fake), coverage(fake, real)


@torch.no_grad()
def density_coverage(real_feats: np.ndarray, fake_feats: np.ndarray, *, k: int = 5, batch_size: int = 5000,
                     device=None) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models").

    With r_i the distance of real i to its k-th nearest other real (k = 5 as in the authors' code):
    density  = 1/(k M) Σ_j Σ_i 1[d(fake_j, real_i) < r_i]   (how many real neighbourhoods hold each fake; ≈ 1
               for identical distributions, unbounded above, robust to real outliers unlike precision);
    coverage = 1/N Σ_i 1[min_j d(real_i, fake_j) < r_i]      (fraction of real neighbourhoods with a fake in them).
    Strict inequalities as in the authors' code (clovaai/generative-evaluation-prdc): identical sets give coverage 1
    and density ≈ 1 (a point at exactly a ball's radius is decided by the float rounding of the distances, as with
    their sklearn distances).  Distances as in ``precision_recall`` (torch.cdist, float32).
    """
    dev = device or "cpu"
    real = torch.from_numpy(np.asarray(real_feats, np.float32)).to(dev)
    fake = torch.from_numpy(np.asarray(fake_feats, np.float32)).to(dev)
    if len(real) <= k or len(fake) < 1:
        raise MetricsError(f"density/coverage with k={k} needs more than {k} real samples and at least 1 fake")
    radii = torch.cat([torch.cdist(real[i:i + batch_size], real).kthvalue(k + 1, dim=1).values
                       for i in range(0, len(real), batch_size)])
    inside = torch.zeros(len(fake), dtype=torch.float64, device=real.device)     # per fake: real balls holding it
    nearest = torch.full((len(real),), float("inf"), device=real.device)           # per real: nearest fake
    for i in range(0, len(fake), batch_size):
        d = torch.cdist(fake[i:i + batch_size], real)                              # fakes × reals
        inside[i:i + len(d)] = (d < radii[None]).sum(dim=1).double()
        nearest = torch.minimum(nearest, d.min(dim=0).values)
    density = float(inside.sum()) / (k * len(fake))
    coverage = float((nearest < radii).double().mean())
    return density, coverage


def fd_sample_counts(n_fake: int, n_real: int, dim: int) -> dict:
    """Sample counts of a Fréchet distance and whether they make it biased: with n ≤ d samples the covariance
    estimate has rank ≤ n − 1 < d (singular), and FD is biased upwards by a term that shrinks like 1/n (Chong &
    Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them"); such values compare
    only with FDs at the same n.  KID is unbiased at any n (Bińkowski et al. 2018)."""
    n = min(int(n_fake), int(n_real))
    out = {"num_samples": int(n_fake), "num_real": int(n_real), "feature_dim": int(dim), "biased": n <= dim}
    if out["biased"]:
        out["note"] = (f"biased: {n_fake} generated / {n_real} real samples for {dim}-d features (n ≤ d: singular "
                       "covariances); compare only at equal n, or use KID (unbiased at small n)")
    return out


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) over ``splits`` consecutive chunks (Salimans et al. 2016): (mean, std)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if len(logits) < splits:
        raise MetricsError(f"Inception Score needs at least {splits} samples")
    p = torch.softmax(logits, dim=1)
    scores = []
    for chunk in torch.chunk(p, splits):
        py = chunk.mean(dim=0, keepdim=True)
        kl = (chunk * (torch.log(chunk.clamp_min(1e-30)) - torch.log(py.clamp_min(1e-30)))).sum(dim=1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))


@torch.no_grad()
def lpips_diversity(images: torch.Tensor, net, *, max_images: int = 100, device=None) -> dict:
    """Mean LPIPS over all pairs of the first ``max_images`` images (higher = more diverse).

    Trunk features are computed once per image and then compared pairwise with the package's own layers
    (scaling, unit-normalisation, linear heads, spatial mean), which equals ``net(x_i, x_j)`` for every pair.
    """
    import lpips

    x = images[:max_images]
    if len(x) < 2:
        raise MetricsError("LPIPS diversity needs at least 2 images")
    if min(x.shape[-2:]) < 32:
        raise MetricsError(f"LPIPS-Alex needs images of at least 32 px, got {tuple(x.shape[-2:])}")
    dev = device or next(net.parameters()).device
    x = (x.float() / 127.5 - 1.0) if x.dtype == torch.uint8 else x.float()
    outs = net.net(net.scaling_layer(x.to(dev)))
    feats = [lpips.normalize_tensor(o) for o in outs]
    total, pairs = 0.0, 0
    for i in range(len(x) - 1):
        d = sum(net.lins[l]((f[i:i + 1] - f[i + 1:]) ** 2).mean(dim=(2, 3)).flatten()
                for l, f in enumerate(feats))
        total += float(d.double().sum())
        pairs += d.numel()
    return {"value": total / pairs, "num_images": len(x), "num_pairs": pairs}


# ---------------------------------------------------------------------------------------------
# Distribution across Accelerate processes
# ---------------------------------------------------------------------------------------------

def block_seed(seed: int, block: int) -> int:
    """Seed of sample block ``block``: a function of (seed, block index) only, never of the process layout."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1))


def my_blocks(n: int, block_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """Blocks [start, stop) of n items owned by process ``rank`` (round robin, so shares differ by ≤ 1 block)."""
    starts = range(0, n, block_size)
    return [(s, min(s + block_size, n)) for b, s in enumerate(starts) if b % world == rank]


def gather_ordered(accelerator, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """All processes' ``rows`` concatenated and sorted by their global ``indices`` (available on every rank).

    Shares may differ in length, so they are padded to the longest and the padding dropped after the gather.
    """
    if accelerator is None or accelerator.num_processes == 1:
        return rows[torch.argsort(indices.to(rows.device))]
    dev = accelerator.device
    rows, indices = rows.to(dev), indices.to(dev, torch.long)
    longest = int(accelerator.gather(torch.tensor([len(rows)], device=dev)).max())
    pad = longest - len(rows)
    rows_p = torch.cat([rows, rows.new_zeros((pad, *rows.shape[1:]))])
    idx_p = torch.cat([indices, indices.new_full((pad,), -1)])
    all_rows, all_idx = accelerator.gather(rows_p), accelerator.gather(idx_p)
    keep = all_idx >= 0
    all_rows, all_idx = all_rows[keep], all_idx[keep]
    return all_rows[torch.argsort(all_idx)]


def _progress(blocks: list[tuple[int, int]], desc: str | None, rank: int):
    """The blocks, under a progress bar counting images when ``desc`` is given (rank 0, terminal only)."""
    from utils.progress import bar, finish

    b = bar(sum(stop - start for start, stop in blocks), desc=desc, unit="img", leave=False) \
        if desc and rank == 0 else None
    if b is None:
        yield from blocks
        return
    try:
        for start, stop in blocks:
            yield start, stop
            b.update(stop - start)
    finally:
        finish(b)


def _gather_outputs(accelerator, feats: list, logits: list, idx: list, dim: int, with_logits: bool
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Concatenate this process's per-block features (and logits), gather all processes', restore global order."""
    all_idx = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)
    f = gather_ordered(accelerator, torch.cat(feats) if feats else torch.zeros(0, dim), all_idx)
    lg = None
    if with_logits:
        lg = gather_ordered(accelerator, torch.cat(logits) if logits else torch.zeros(0, 1000), all_idx).cpu().numpy()
    return f.cpu().numpy(), lg


def distributed_extract(images, extractor: FeatureExtractor, *, batch_size: int = 64, device=None,
                        classifier=None, accelerator=None,
                        transform: Callable[[Any], torch.Tensor] | None = None,
                        on_block: Callable[[int, Any], None] | None = None,
                        desc: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``extract`` with batches split across processes and gathered in order: same numbers as one process.

    ``transform(block) -> uint8 images`` is applied to each block first (e.g. an image-to-image translation, so it
    is split across processes too); ``on_block(start, block)`` sees the block that is measured (to save PNGs).
    ``desc``: show a progress bar with this label (main process, terminal only; utils.progress).
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    feats, logits, idx = [], [], []
    for start, stop in _progress(my_blocks(len(images), batch_size, rank, world), desc, rank):
        block = images[start:stop] if transform is None else transform(images[start:stop])
        if on_block is not None:
            on_block(start, block)
        f, lg = extract(block, extractor, batch_size=batch_size, device=device, classifier=classifier)
        feats.append(torch.from_numpy(f))
        logits.append(torch.from_numpy(lg) if lg is not None else None)
        idx.append(torch.arange(start, stop))
    return _gather_outputs(accelerator, feats, logits, idx, extractor.dim, classifier is not None)


class BlockFeatures:
    """A second network's features, collected from ``on_block(start, uint8 block)`` calls and gathered in global
    order: lets precision/recall use other features than FID on the very same samples, without a second pass."""

    def __init__(self, extractor: FeatureExtractor, *, batch_size: int = 64, device=None):
        self.extractor, self.batch_size, self.device = extractor, batch_size, device
        self.feats: list[torch.Tensor] = []
        self.idx: list[torch.Tensor] = []

    def __call__(self, start: int, block) -> None:
        f = extract_features(block, self.extractor, batch_size=self.batch_size, device=self.device)
        self.feats.append(torch.from_numpy(f))
        self.idx.append(torch.arange(start, start + len(f)))

    def gather(self, accelerator=None) -> np.ndarray:
        """All processes' features in sample order (every process must call this)."""
        return _gather_outputs(accelerator, self.feats, [], self.idx, self.extractor.dim, False)[0]


@dataclass
class Generated:
    """Everything gathered from sampling: features (+ IS logits), the first images, and timing."""
    features: np.ndarray
    logits: np.ndarray | None
    head_images: torch.Tensor          # uint8, the first `keep_images` samples in global order
    sampling_seconds: float            # slowest process's time inside sample_fn (synchronised)
    num_processes: int = 1
    block_size: int = 0


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate_and_extract(sample_fn: Callable[[int, torch.Generator], torch.Tensor], n: int,
                         extractor: FeatureExtractor, *, block_size: int = 64, seed: int = 0, device=None,
                         classifier=None, accelerator=None, keep_images: int = 0,
                         on_block: Callable[[int, torch.Tensor], None] | None = None,
                         desc: str | None = None) -> Generated:
    """Sample n images in blocks, extract features per block, gather in global order.

    ``sample_fn(num, generator) -> float N×3×R×R in [-1, 1]``.  Block b holds samples [b·B, (b+1)·B) and is drawn
    with a CPU generator seeded by ``block_seed(seed, b)``: the images depend on (seed, block size) only, not on
    the number of processes or the device.  ``on_block(start, uint8_images)`` lets the caller save PNGs on the
    process that drew them; ``keep_images`` first samples are gathered as uint8 (for LPIPS diversity).
    ``desc``: show a progress bar with this label (main process, terminal only; utils.progress).
    """
    from utils.data import to_uint8

    device = torch.device(device or next(extractor.parameters()).device)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    feats, logits, idx, head = [], [], [], []
    sampling = 0.0
    for start, stop in _progress(my_blocks(n, block_size, rank, world), desc, rank):
        # A CPU generator: every family draws its noise on the generator's device and moves it, so the same
        # seed gives the same images on CPU and GPU.
        g = torch.Generator().manual_seed(block_seed(seed, start // block_size))
        _sync(device)
        t0 = time.perf_counter()
        imgs = sample_fn(stop - start, g)
        _sync(device)
        sampling += time.perf_counter() - t0
        if imgs.shape[0] != stop - start or imgs.ndim != 4 or imgs.shape[1] != 3:
            raise MetricsError(f"sample_fn returned shape {tuple(imgs.shape)}, expected {stop - start}×3×R×R")
        u8 = to_uint8(imgs)
        if on_block is not None:
            on_block(start, u8)
        f, lg = extract(u8, extractor, batch_size=block_size, device=device, classifier=classifier)
        feats.append(torch.from_numpy(f))
        logits.append(torch.from_numpy(lg) if lg is not None else None)
        idx.append(torch.arange(start, stop))
        if start < keep_images:
            head.append((torch.arange(start, min(stop, keep_images)), u8[:keep_images - start].cpu()))
    features, all_logits = _gather_outputs(accelerator, feats, logits, idx, extractor.dim, classifier is not None)
    head_images = torch.zeros(0, dtype=torch.uint8)
    if keep_images:
        shape = tuple(head[0][1].shape[1:]) if head else (0, 0, 0)
        if accelerator is not None and accelerator.num_processes > 1:
            # Ranks without head images still send a (0, *shape) tensor, and gather needs one common shape.
            shapes = accelerator.gather(torch.tensor(shape, device=accelerator.device)).view(-1, 3)
            shape = tuple(int(s) for s in shapes.max(dim=0).values)
        h_imgs = torch.cat([h[1] for h in head]) if head else torch.zeros((0, *shape), dtype=torch.uint8)
        h_idx = torch.cat([h[0] for h in head]) if head else torch.zeros(0, dtype=torch.long)
        head_images = gather_ordered(accelerator, h_imgs, h_idx).cpu()
    if accelerator is not None and accelerator.num_processes > 1:
        sampling = float(accelerator.gather(torch.tensor([sampling], device=accelerator.device)).max())
    return Generated(features, all_logits, head_images, sampling, world, block_size)


# ---------------------------------------------------------------------------------------------
# Reference statistics cache
# ---------------------------------------------------------------------------------------------

def stats_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """--stats-cache, else $FACEGEN_CACHE/fid_stats, else ~/.cache/facegen/fid_stats."""
    if override:
        return Path(override)
    root = os.environ.get("FACEGEN_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "facegen") / "fid_stats"


def reference_key(*, source: str, split_sha256: str, pixels_sha256: str, resolution, n: int,
                  extractor: FeatureExtractor) -> dict:
    """Everything that determines reference features: data identity, size, resolution, mode and network."""
    return {"version": STATS_CACHE_VERSION, "source": str(source), "split_sha256": split_sha256,
            "pixels_sha256": pixels_sha256, "resolution": resolution, "n": int(n), "mode": FID_MODE,
            "extractor": extractor.name, "extractor_sha256": extractor.sha256}


def _key_path(key: dict, cache_dir: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"{key['extractor']}-{key['n']}-{digest}.npz"


def load_reference_features(key: dict, cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray | None, Path]:
    """(features, path) if a cache entry with exactly this key exists, else (None, path). Corrupt files are ignored."""
    path = _key_path(key, stats_cache_dir(cache_dir))
    if not path.is_file():
        return None, path
    try:
        with np.load(path) as z:
            if json.loads(str(z["key"])) != key:
                return None, path
            return z["features"], path
    except (OSError, ValueError, KeyError):
        return None, path


def save_reference_features(key: dict, features: np.ndarray, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write features (+ key, mu, sigma for external tools) atomically as .npz."""
    from utils.export import atomic_write_bytes

    path = _key_path(key, stats_cache_dir(cache_dir))
    mu, sigma = feature_statistics(features)
    buf = io.BytesIO()
    np.savez(buf, features=features, mu=mu, sigma=sigma, key=np.array(json.dumps(key, sort_keys=True)))
    atomic_write_bytes(path, buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------
# Shareable reference statistics (clean-fid's custom-statistics format + a provenance sidecar)
# ---------------------------------------------------------------------------------------------

REF_STATS_VERSION = 1


def reference_stats_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(mu/sigma .npz, features _kid.npz, sidecar .json) of a statistics file, named as clean-fid names
    ``<name>_clean_custom_na.npz`` and ``<name>_clean_custom_na_kid.npz`` (``cleanfid.fid.make_custom_stats``)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return path, path.with_name(path.stem + "_kid.npz"), path.with_suffix(".json")


def save_reference_statistics(path: str | os.PathLike, extractor: FeatureExtractor, features: np.ndarray,
                              meta: dict) -> list[Path]:
    """Write the reference's mu and sigma (``np.savez_compressed(mu=, sigma=)``, the file clean-fid's
    ``compute_fid(..., dataset_name=<name>, dataset_split="custom")`` reads), its features for KID and the k-NN
    metrics (``feats=``, clean-fid's ``_kid.npz``), and a sidecar JSON saying what they are: network, mode,
    image count and the data's identity (source, split hash, crop, resolution)."""
    from utils.export import atomic_write_bytes, atomic_write_json

    stats_path, kid_path, side_path = reference_stats_paths(path)
    mu, sigma = feature_statistics(features)
    for target, arrays in ((stats_path, {"mu": mu, "sigma": sigma}), (kid_path, {"feats": features})):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(target, buf.getvalue())
    atomic_write_json(side_path, {
        "facegen_reference_statistics": REF_STATS_VERSION,
        "format": "clean-fid custom statistics: mu, sigma (np.mean/np.cov of the features) in the .npz; the "
                  "features (feats) in the _kid.npz",
        "mode": FID_MODE, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta,
        "n": int(len(features)), "feature_extractor": extractor.describe(),
        "files": {"stats": stats_path.name, "stats_sha256": _file_sha256(stats_path), "features": kid_path.name}})
    return [stats_path, kid_path, side_path]


def _file_sha256(path: Path) -> str:
    from utils.feature_nets import file_sha256

    return file_sha256(path)


def load_reference_statistics(path: str | os.PathLike, extractor: FeatureExtractor
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(mu, sigma, features or None, provenance) of a statistics file written by ``save_reference_statistics``
    or by clean-fid's ``make_custom_stats``.  The sidecar's network must be ``extractor`` (same name and sha256);
    a file without a sidecar is accepted for clean-fid's Inception only (what clean-fid writes)."""
    stats_path, kid_path, side_path = reference_stats_paths(path)
    if not stats_path.is_file():
        raise MetricsError(f"--ref-stats {stats_path} not found")
    try:
        with np.load(stats_path) as z:
            mu, sigma = z["mu"], z["sigma"]
        features = None
        if kid_path.is_file():
            with np.load(kid_path) as z:
                features = z["feats"].astype(np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise MetricsError(f"--ref-stats {stats_path}: not a clean-fid statistics file with 'mu' and 'sigma' "
                           f"({type(e).__name__}: {str(e)[:80]})") from None
    sha = _file_sha256(stats_path)
    if side_path.is_file():
        try:
            side = json.loads(side_path.read_text())
        except (OSError, ValueError) as e:
            raise MetricsError(f"--ref-stats sidecar {side_path} is not readable JSON ({e})") from None
        fe = side.get("feature_extractor") or {}
        if fe.get("name") != extractor.name or (fe.get("sha256") and extractor.sha256
                                                and fe["sha256"] != extractor.sha256):
            raise MetricsError(f"--ref-stats {stats_path} was made with {fe.get('name')!r} (sha256 "
                               f"{str(fe.get('sha256'))[:12]}), not {extractor.name!r} (sha256 "
                               f"{str(extractor.sha256)[:12]}); use the same --feature-extractor/--fid-weights")
        if side.get("mode", FID_MODE) != FID_MODE:
            raise MetricsError(f"--ref-stats {stats_path} is in FID mode {side.get('mode')!r}, expected {FID_MODE!r}")
        recorded = (side.get("files") or {}).get("stats_sha256")
        if recorded and recorded != sha:
            raise MetricsError(f"--ref-stats {stats_path} does not match its sidecar's sha256 (edited or replaced?)")
        info = {k: side.get(k) for k in ("source", "split", "split_sha256", "pixels_sha256", "resolution", "crop",
                                         "num_files", "n", "created")}
    else:
        if not extractor.name.startswith("clean-fid-inception"):
            raise MetricsError(f"--ref-stats {stats_path} has no sidecar {side_path.name} saying which network made "
                               f"it; without one only clean-fid's Inception statistics are accepted")
        info = {"source": str(stats_path.resolve()), "split": "statistics file", "split_sha256": sha,
                "pixels_sha256": None, "resolution": None, "crop": None, "num_files": None,
                "n": int(len(features)) if features is not None else None,
                "note": "no sidecar: assumed clean-fid's Inception in clean mode (as clean-fid writes it)"}
    if info.get("n") is None:
        info["n"] = int(len(features)) if features is not None else 0
    if features is not None and len(features) != info["n"]:
        raise MetricsError(f"--ref-stats {kid_path} holds {len(features)} features, the sidecar says {info['n']}")
    info.update(ref_stats=str(stats_path.resolve()), ref_stats_sha256=sha,
                ref_features=str(kid_path.resolve()) if features is not None else None)
    return mu, sigma, features, info


# ---------------------------------------------------------------------------------------------
# FIDEvaluator: cached real statistics + FID of generated images (trainers and evaluate.py)
# ---------------------------------------------------------------------------------------------

@dataclass
class FIDEvaluator:
    """Real reference features computed once (and cached on disk when ``cache_key`` is given).

    Typical trainer use (all processes call it; every rank gets the same number)::

        ev = FIDEvaluator.from_face_data(data, "inception", weights=args.fid_weights,
                                         device=accelerator.device, accelerator=accelerator)
        fid = ev.compute(lambda n, g: ema.sample(n, generator=g), n=args.fid_samples, batch_size=64, seed=0)
    """

    extractor: FeatureExtractor
    real_features: np.ndarray | None     # None: a reference given as statistics only (from_statistics)
    device: torch.device
    batch_size: int = 64
    accelerator: object = None
    info: dict = field(default_factory=dict)
    fd_method: str = "sqrtm"   # 'eigh' for fast periodic FID during training (same value to ~1e-6)

    @property
    def mu(self) -> np.ndarray:
        return self._stats()[0]

    @property
    def sigma(self) -> np.ndarray:
        return self._stats()[1]

    def _stats(self):
        # Lazy: a precision/recall-only evaluator (4096-d VGG features) never needs the covariance.
        if "_mu_sigma" not in self.__dict__:
            self.__dict__["_mu_sigma"] = feature_statistics(self.real_features)
        return self.__dict__["_mu_sigma"]

    @classmethod
    def from_images(cls, extractor: FeatureExtractor, real_images, *, device=None, batch_size: int = 64,
                    cache_key: dict | None = None, cache_dir=None, accelerator=None, info: dict | None = None,
                    fd_method: str = "sqrtm", desc: str | None = None) -> "FIDEvaluator":
        """Reference features of ``real_images`` (uint8 tensor or list of H×W×3 arrays), from the cache if present."""
        device = torch.device(device or next(extractor.parameters()).device)
        info = dict(info or {}, n=len(real_images), cache_hit=False, cache_path=None)
        feats = None
        if cache_key is not None:
            feats, path = load_reference_features(cache_key, cache_dir)
            if accelerator is not None and accelerator.num_processes > 1:
                # A collective decision: a rank that computes while another reads the cache would hang the gather.
                hit = torch.tensor([int(feats is not None)], device=accelerator.device)
                if int(accelerator.gather(hit).min()) == 0:
                    feats = None
            info.update(cache_path=str(path), cache_hit=feats is not None)
        if feats is None:
            t0 = time.perf_counter()
            feats, _ = distributed_extract(real_images, extractor, batch_size=batch_size, device=device,
                                           accelerator=accelerator, desc=desc)
            info["reference_seconds"] = time.perf_counter() - t0
            is_main = accelerator is None or accelerator.is_main_process
            if cache_key is not None and is_main:
                save_reference_features(cache_key, feats, cache_dir)
            if accelerator is not None:
                accelerator.wait_for_everyone()
        return cls(extractor, feats, device, batch_size, accelerator, info, fd_method)

    @classmethod
    def from_statistics(cls, extractor: FeatureExtractor, mu: np.ndarray, sigma: np.ndarray, *,
                        features: np.ndarray | None = None, device=None, batch_size: int = 64, accelerator=None,
                        info: dict | None = None, fd_method: str = "sqrtm") -> "FIDEvaluator":
        """A reference given as statistics (``load_reference_statistics``): FID against (mu, sigma); KID,
        precision/recall and density/coverage only when the reference features came with them."""
        mu, sigma = np.atleast_1d(mu), np.atleast_2d(sigma)
        if mu.shape != (extractor.dim,) or sigma.shape != (extractor.dim, extractor.dim):
            raise MetricsError(f"reference statistics are {mu.shape[0]}-d, but {extractor.name} gives "
                               f"{extractor.dim}-d features; were they made with another network?")
        if features is not None and features.shape[1:] != (extractor.dim,):
            raise MetricsError(f"reference features are {features.shape[1:]}-d, expected {extractor.dim}")
        device = torch.device(device or next(extractor.parameters()).device)
        ev = cls(extractor, features, device, batch_size, accelerator, dict(info or {}), fd_method)
        ev.__dict__["_mu_sigma"] = (mu, sigma)
        return ev

    @classmethod
    def from_face_data(cls, data, extractor: str | FeatureExtractor = "inception", *, weights=None, device=None,
                       batch_size: int = 64, n_real: int | None = None, cache_dir=None, accelerator=None,
                       fd_method: str = "sqrtm") -> "FIDEvaluator":
        """Reference = ``data.heldout`` (a utils.data.FaceData), keyed in the cache by its split and pixels."""
        device = torch.device(device or (accelerator.device if accelerator is not None else "cpu"))
        if isinstance(extractor, str):
            extractor = load_feature_extractor(extractor, weights=weights, device=device)
        real = data.heldout if n_real is None else data.heldout[:n_real]
        pix = pixels_sha256(real)
        key = reference_key(source=data.info.get("source", "?"), split_sha256=data.info.get("split_sha256", pix),
                            pixels_sha256=pix, resolution=int(real.shape[-1]), n=len(real), extractor=extractor)
        info = {"source": key["source"], "split": "heldout", "split_sha256": key["split_sha256"],
                "pixels_sha256": pix, "resolution": key["resolution"], "manifest_path": data.info.get("manifest_path")}
        return cls.from_images(extractor, real, device=device, batch_size=batch_size, cache_key=key,
                               cache_dir=cache_dir, accelerator=accelerator, info=info, fd_method=fd_method)

    def features(self, images) -> np.ndarray:
        return distributed_extract(images, self.extractor, batch_size=self.batch_size, device=self.device,
                                   accelerator=self.accelerator)[0]

    def fid_from_features(self, fake_features: np.ndarray) -> float:
        if len(fake_features) < 2:
            raise MetricsError("FID needs at least 2 generated samples")
        return frechet_distance(*feature_statistics(fake_features), self.mu, self.sigma, method=self.fd_method,
                                device=self.device)

    def fid(self, fake_images) -> float:
        """FID of uint8 images (tensor N×3×H×W or list of H×W×3 arrays) against the reference."""
        return self.fid_from_features(self.features(fake_images))

    def compute(self, sample_fn: Callable[[int, torch.Generator], torch.Tensor], n: int, *,
                batch_size: int | None = None, seed: int = 0) -> float:
        """FID of n samples of ``sample_fn(num, generator) -> [-1, 1] images`` (split across processes)."""
        gen = generate_and_extract(sample_fn, n, self.extractor, block_size=batch_size or self.batch_size, seed=seed,
                                   device=self.device, accelerator=self.accelerator)
        return self.fid_from_features(gen.features)

    @property
    def num_real(self) -> int:
        return len(self.real_features) if self.real_features is not None else int(self.info.get("n", 0))

    def metrics(self, fake_features: np.ndarray, *, want: Sequence[str] = ("fid", "kid", "pr"), k: int = 3,
                kid_seed: int = 0, dc_k: int = 5) -> dict:
        """{'fid', 'kid', 'precision', 'recall', 'density', 'coverage'} entries ({'value': ...} dicts) for the
        requested metrics ('pr' = precision + recall, 'dc' = density + coverage), each naming this evaluator's
        feature network (``features``, ``features_name``, ``features_sha256``) and its sample counts
        (``num_samples``, ``num_real``); the Fréchet distance also says whether those counts make it biased.

        A metric that cannot be computed (e.g. too few samples) becomes {"value": None, "not_computed": why}.
        """
        out = {}
        n_fake, n_real = len(fake_features), self.num_real
        feats = self.extractor.features_info()
        no_features = (not_computed("the reference is feature statistics only (mu, sigma; --ref-stats without its "
                                    "_kid.npz features): this metric needs the reference features")
                       if self.real_features is None else None)
        if "fid" in want:
            out["fid"] = _entry(lambda: {"value": self.fid_from_features(fake_features), "fd_method": self.fd_method})
            if out["fid"]["value"] is not None:
                out["fid"].update(fd_sample_counts(n_fake, n_real, self.extractor.dim))
        if "kid" in want:
            out["kid"] = no_features or _entry(lambda: {
                "value": kid(self.real_features, fake_features, seed=kid_seed, device=self.device),
                "num_subsets": 100, "subset_size": min(n_fake, n_real, 1000), "seed": kid_seed})
        if "pr" in want:
            pr = no_features or _entry(lambda: dict(zip(("precision", "recall"), precision_recall(
                self.real_features, fake_features, k=k, device=self.device))))
            for name in ("precision", "recall"):
                out[name] = {"value": pr[name], "k": k} if "not_computed" not in pr else dict(pr)
        if "dc" in want:
            dc = no_features or _entry(lambda: dict(zip(("density", "coverage"), density_coverage(
                self.real_features, fake_features, k=dc_k, device=self.device))))
            for name in ("density", "coverage"):
                out[name] = ({"value": dc[name], "k": dc_k, "reference": "Naeem et al. 2020"}
                             if "not_computed" not in dc else dict(dc))
        counts = {"num_samples": n_fake, "num_real": n_real}
        return {name: {**entry, **feats, **counts} for name, entry in out.items()}


def _entry(fn: Callable[[], dict]) -> dict:
    """Run one metric; a MetricsError (too few samples, ...) becomes an explicit not-computed entry."""
    try:
        return fn()
    except MetricsError as e:
        return not_computed(str(e))


# ---------------------------------------------------------------------------------------------
# metrics.json
# ---------------------------------------------------------------------------------------------

METRICS_SCHEMA_VERSION = 1
# Every metrics.json holds all of these entries; one that was not computed has value null and says why.
METRIC_NAMES = ("fid", "kid", "precision", "recall", "inception_score", "lpips_diversity",
                "params_generator", "params_total", "train_seconds", "sampling_throughput")
# Metrics computed on a network's outputs: a computed entry names that network in "features" (write_metrics
# enforces it; files written before this was recorded are still read).
FEATURE_METRICS = ("fid", "kid", "precision", "recall", "inception_score", "lpips_diversity", "density", "coverage",
                   "fd_dinov2")
# Written by this code into every new metrics.json, but absent from files written before they existed (those
# still validate): density/coverage (Naeem et al. 2020) and FD-DINOv2 (Stein et al. 2023).
OPTIONAL_METRIC_NAMES = ("density", "coverage", "fd_dinov2")
_SECTIONS = {"source": dict, "samples": dict, "real": dict, "feature_extractor": dict, "metrics": dict,
             "versions": dict, "runtime": dict, "fid_mode": str, "created": str, "command": str}


class MetricsFileError(ValueError):
    """A metrics.json that does not follow the schema; one-line message."""


def not_computed(reason: str, **extra) -> dict:
    return {"value": None, "not_computed": reason, **extra}


def validate_metrics(obj: dict, where: str = "metrics.json", *, require_features: bool = False) -> dict:
    """Check a metrics.json object against schema version 1 (see ``evaluate.py`` for the field list).

    ``require_features``: computed FEATURE_METRICS must name their feature network (new files).
    """
    if not isinstance(obj, dict):
        raise MetricsFileError(f"{where}: top level must be an object")
    if obj.get("schema_version") != METRICS_SCHEMA_VERSION:
        raise MetricsFileError(f"{where}: schema_version {obj.get('schema_version')!r}, "
                               f"this code reads {METRICS_SCHEMA_VERSION}")
    for name, typ in _SECTIONS.items():
        if not isinstance(obj.get(name), typ):
            raise MetricsFileError(f"{where}: missing or mistyped '{name}' (expected {typ.__name__})")
    missing = [m for m in METRIC_NAMES if m not in obj["metrics"]]
    if missing:
        raise MetricsFileError(f"{where}: metrics lacks {', '.join(missing)}")
    for name, entry in obj["metrics"].items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise MetricsFileError(f"{where}: metrics.{name} must be an object with a 'value'")
        v = entry["value"]
        if v is None:
            if not isinstance(entry.get("not_computed"), str) or not entry["not_computed"]:
                raise MetricsFileError(f"{where}: metrics.{name} is null without a 'not_computed' reason")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise MetricsFileError(f"{where}: metrics.{name}.value must be a finite number or null, got {v!r}")
        elif require_features and name in FEATURE_METRICS and not (isinstance(entry.get("features"), str)
                                                                   and entry["features"]):
            raise MetricsFileError(f"{where}: metrics.{name} does not say which features it was computed on")
    if obj["fid_mode"] != FID_MODE:
        raise MetricsFileError(f"{where}: fid_mode {obj['fid_mode']!r}, expected {FID_MODE!r}")
    return obj


def write_metrics(path: str | os.PathLike, obj: dict) -> Path:
    """Validate, then write atomically (readers never see half a file)."""
    from utils.export import atomic_write_json

    validate_metrics(obj, str(path), require_features=True)
    atomic_write_json(path, obj)
    return Path(path)


def read_metrics(path: str | os.PathLike) -> dict:
    """Load and validate a metrics.json; raises MetricsFileError with a one-line message."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise MetricsFileError(f"{path}: not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise MetricsFileError(f"{path}: not readable JSON ({e})") from None
    return validate_metrics(obj, str(path))
