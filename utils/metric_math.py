"""The metric definitions on features: Fréchet distance (FID, FD-DINOv2), KID, improved precision/recall,
density/coverage, Inception Score, LPIPS diversity.

Statistics use clean-fid's formulas: ``np.mean``/``np.cov`` of float32 features, the same Fréchet distance
and the same KID estimator (subset sampling included).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from utils.feature_nets import MetricsError


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
