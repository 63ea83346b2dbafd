"""metrics.json, schema version 1: the entry names, validation, atomic writing and reading.

Imports neither torch nor the feature networks, so tools that only read metrics.json files (compare.py's
tables, model cards) stay light.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

# clean-fid's preprocessing mode, recorded in every metrics.json and every reference-statistics file.
FID_MODE = "clean"

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
    from utils.export import atomic_write_json  # imports torch: only writers pay for it

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
