"""Reference features kept between runs: the on-disk cache keyed by data identity and network, and
shareable statistics files in clean-fid's custom-statistics format with a provenance sidecar.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from utils.feature_nets import FeatureExtractor, MetricsError, file_sha256
from utils.metric_math import feature_statistics
from utils.metrics_schema import FID_MODE

STATS_CACHE_VERSION = 1


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
        "files": {"stats": stats_path.name, "stats_sha256": file_sha256(stats_path), "features": kid_path.name}})
    return [stats_path, kid_path, side_path]


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
    sha = file_sha256(stats_path)
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
