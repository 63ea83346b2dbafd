"""FIDEvaluator: reference features computed once (cached on disk), then FID and the other feature metrics
of generated images against them.  Used by the trainers' periodic FID and by evaluate.py.

Features come from ``utils.feature_nets``: clean-fid's Inception for reportable numbers, or a seeded random
'tiny' net for tests and CPU smoke runs (never comparable with Inception numbers); precision/recall may instead
use VGG-16 features (``evaluate.py --pr-features vgg16``).  Every metrics.json entry names its features.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from utils.feature_nets import FeatureExtractor, MetricsError, load_feature_extractor
from utils.features import distributed_extract, generate_and_extract
from utils.fid_images import pixels_sha256
from utils.metric_math import (density_coverage, fd_sample_counts, feature_statistics, frechet_distance, kid,
                               precision_recall)
from utils.metrics_schema import not_computed
from utils.reference_stats import load_reference_features, reference_key, save_reference_features


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
