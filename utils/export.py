"""Self-describing model exports.

An export is one ``.safetensors`` file whose metadata carries everything needed
to rebuild the model: family, schema version, model config, train config, step,
epoch, which weights (EMA or raw) and training time.  A sidecar ``.json`` holds
the same metadata for humans and tools that do not read safetensors.

``load_export(path)`` takes no architecture flags (unlike DiT's ``sample.py``,
which ignores the args stored in its checkpoint): the family's builder is looked
up in ``models.FAMILIES`` and called with the stored model config.

Resume state is *not* an export; it is an Accelerate state directory written by
``utils.checkpoint``.
"""
from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

SCHEMA_VERSION = 1
_META_KEYS = ("family", "schema_version", "model_config", "train_config", "step", "epoch",
              "weights", "train_seconds", "extra", "created")


class ExportError(ValueError):
    """A file that is not a usable export; the message is one line for the user."""


@dataclass
class Export:
    family: str
    model: nn.Module
    model_config: dict
    train_config: dict
    step: int
    epoch: int
    weights: str
    train_seconds: float
    extra: dict = field(default_factory=dict)
    path: str = ""

    @property
    def meta(self) -> dict:
        return {k: getattr(self, k) for k in ("family", "model_config", "train_config", "step", "epoch",
                                               "weights", "train_seconds", "extra", "path")}


class DiskFullError(SystemExit):
    """The disk (or quota) is full: a one-line exit; the partial file is removed and earlier files are intact."""

    def __init__(self, path, err: OSError):
        super().__init__(f"error: {err.strerror or 'no space left'} while writing {path}; nothing was overwritten "
                         f"(free some space and run again; a training run continues with --resume latest)")


DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in DISK_FULL:
            raise DiskFullError(path, e) from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def save_export(path: str | os.PathLike, family: str, model: nn.Module, model_config: dict,
                train_config: dict | None = None, *, step: int = 0, epoch: int = 0, weights: str = "ema",
                train_seconds: float = 0.0, extra: dict | None = None) -> Path:
    """Write ``model``'s state dict plus self-describing metadata, atomically.

    ``model`` must be the module that ``models.FAMILIES[family](model_config)`` rebuilds.
    """
    from safetensors.torch import save

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    path = Path(path)
    # Tied or shared tensors are not allowed by safetensors; contiguous CPU copies avoid both problems.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "family": family,
        "schema_version": str(SCHEMA_VERSION),
        "model_config": json.dumps(model_config, sort_keys=True, default=str),
        "train_config": json.dumps(train_config or {}, sort_keys=True, default=str),
        "step": str(int(step)),
        "epoch": str(int(epoch)),
        "weights": weights,
        "train_seconds": repr(float(train_seconds)),
        "extra": json.dumps(extra or {}, sort_keys=True, default=str),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(path, save(tensors, metadata=meta))
    sidecar = {k: meta[k] for k in _META_KEYS}
    for k in ("model_config", "train_config", "extra"):
        sidecar[k] = json.loads(meta[k])
    sidecar.update(schema_version=SCHEMA_VERSION, step=int(step), epoch=int(epoch),
                   train_seconds=float(train_seconds), num_params=sum(t.numel() for t in tensors.values()))
    atomic_write_json(path.with_suffix(".json"), sidecar)
    if path.name == MODEL_CARD_EXPORT:
        _write_card(path)
    return path


# A run's final export gets a model card (README.md, Hugging Face format) beside it; snapshots (exports/step*) share
# a folder and do not.  evaluate.py refreshes the card with its metrics.
MODEL_CARD_EXPORT = "export.safetensors"


def _write_card(path: Path) -> None:
    import sys

    from utils.model_card import write_model_card

    try:
        write_model_card(path)
    except DiskFullError:
        raise
    except Exception as e:  # a card must never cost the export it describes
        print(f"warning: model card for {path} not written ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)


def read_export_metadata(path: str | os.PathLike) -> dict:
    """Parsed metadata of an export, without loading weights. Raises ExportError with a one-line message."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ExportError(f"export not found: {path}")
    if path.is_dir():
        raise ExportError(f"{path} is a directory; pass the .safetensors export file inside it")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for truncated/garbage files
        raise ExportError(f"{path} is not a readable safetensors file "
                          f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]})") from None
    if "family" not in raw or "schema_version" not in raw:
        raise ExportError(f"{path} has no facegen metadata (family/schema_version); it was not written by save_export")
    try:
        version = int(raw["schema_version"])
    except ValueError:
        raise ExportError(f"{path} has an unreadable schema version {raw['schema_version']!r}") from None
    if version != SCHEMA_VERSION:
        raise ExportError(f"{path} has export schema version {version}; this code reads version {SCHEMA_VERSION}")
    try:
        return {
            "family": raw["family"],
            "schema_version": version,
            "model_config": json.loads(raw.get("model_config", "{}")),
            "train_config": json.loads(raw.get("train_config", "{}")),
            "step": int(raw.get("step", 0)),
            "epoch": int(raw.get("epoch", 0)),
            "weights": raw.get("weights", "raw"),
            "train_seconds": float(raw.get("train_seconds", 0.0)),
            "extra": json.loads(raw.get("extra", "{}")),
        }
    except (ValueError, TypeError) as e:
        raise ExportError(f"{path} has corrupt metadata: {e}") from None


def load_export(path: str | os.PathLike, family: str | None = None, device: str | torch.device = "cpu") -> Export:
    """Rebuild a model from an export file alone.

    ``family``: if given, a file of another family is rejected with a clear message.
    The returned model is in eval mode on ``device``.
    """
    from safetensors.torch import load_file

    from models import build_model, known_families

    meta = read_export_metadata(path)
    if meta["family"] not in known_families():
        raise ExportError(f"{path} is a {meta['family']!r} export; known families: {', '.join(known_families())}")
    if family is not None and meta["family"] != family:
        raise ExportError(f"{path} is a {meta['family']!r} export, expected a {family!r} export")
    try:  # a config written for another family, or edited by hand, must not end in a traceback
        if not isinstance(meta["model_config"], dict):
            raise TypeError("model_config is not a JSON object")
        model = build_model(meta["family"], meta["model_config"])
    except Exception as e:
        raise ExportError(f"{path}: cannot build a {meta['family']!r} model from its stored config "
                          f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]})") from None
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise ExportError(f"{path}: cannot read tensors "
                          f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ExportError(f"{path}: weights do not match the stored config ({str(e).splitlines()[-1].strip()[:160]})") from None
    if missing or unexpected:
        raise ExportError(f"{path}: weights do not match the stored config "
                          f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.to(device).eval()
    return Export(path=str(path), model=model, **{k: meta[k] for k in (
        "family", "model_config", "train_config", "step", "epoch", "weights", "train_seconds", "extra")})
