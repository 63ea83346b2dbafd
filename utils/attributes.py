"""Binary face attributes: CelebA attribute files, the synthetic faces' own attributes, and the data they split.

Two trainers condition on an attribute: train_cyclegan.py splits one source into domain X (attribute −1) and
domain Y (+1) with ``load_domains``; train_gan.py --cond-attr (ACGAN) labels each image with its class (0: −1, 1: +1)
with ``load_labelled_data``.  Both take parsed args or an export's train_config dict, so evaluate.py and compare.py
rebuild a run's held-out domains or classes from the export alone.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

from utils.data import FaceData, face_data_from_args, heldout_indices
from utils.data_sources import DataError, celeba_sets, default_cache_dir, folder_set, synthetic_set


# ---------------------------------------------------------------------------------------------
# Attribute values per image
# ---------------------------------------------------------------------------------------------

def read_attribute_file(path: str | Path, attr: str) -> dict[str, int]:
    """{image file name: ±1} for ``attr`` from a CelebA attribute file.

    Accepts the official list_attr_celeba.txt (count line, header line of names, then ``name v1 v2 …``) and
    the CSV form (``image_id,5_o_Clock_Shadow,…``). Values > 0 are +1, all others −1.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"attribute file not found: {path}")
    lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    split = (lambda l: l.strip().split(",")) if lines and "," in lines[0] else (lambda l: l.split())
    if lines and lines[0].strip().isdigit():
        lines = lines[1:]
    if len(lines) < 2:
        raise DataError(f"{path}: no attribute rows (expected a header line of names, then one row per image)")
    header = split(lines[0])
    width = len(split(lines[1]))
    names = header[1:] if len(header) == width else header  # CSV headers name the file column, CelebA's do not
    if attr not in names:
        raise DataError(f"attribute {attr!r} not in {path.name}; it has: {', '.join(names)}")
    col = names.index(attr) + 1
    values = {}
    for line in lines[1:]:
        row = split(line)
        if len(row) != len(names) + 1:
            continue  # a cut or malformed row: the image then counts as "no attribute row"
        try:
            values[row[0]] = 1 if float(row[col]) > 0 else -1
        except ValueError:
            continue
    if not values:
        raise DataError(f"{path}: no readable rows for attribute {attr!r}")
    return values


def source_names(args, data: FaceData) -> tuple[list[str], list[str]]:
    """Names of data.train and data.heldout rows, in order.

    FaceData does not carry names, so they are recomputed from the same (cached) listing load_face_data used.
    """
    if hasattr(data, "train_names"):
        return list(data.train_names), list(data.heldout_names)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.data == "celeba":
        train_set, pool = celeba_sets(args.data_root, args.resolution, args.crop, args.download, cache)
        train, held = train_set.names, [pool.names[i] for i in heldout_indices(pool.names, args.n_real, 1.0)]
    else:
        raw = (synthetic_set(args.synthetic_size, args.resolution, getattr(args, "data_seed", 0), cache)
               if args.data == "synthetic" else folder_set(args.data, args.resolution, args.crop, cache))
        held_idx = set(heldout_indices(raw.names, args.n_real).tolist())
        train = [n for i, n in enumerate(raw.names) if i not in held_idx]
        held = [raw.names[i] for i in sorted(held_idx)]
    if (len(train), len(held)) != (len(data.train), len(data.heldout)):
        raise DataError(f"{args.data}: image names do not line up with the loaded data; clear the cache and retry")
    return train, held


def attribute_signs(args, names: list[str]) -> np.ndarray:
    """±1 per name (0: no attribute row for it)."""
    if args.data == "synthetic":
        from utils.synthetic import face_attributes
        from utils.synthetic_params import ATTRIBUTE_NAMES
        if args.attr not in ATTRIBUTE_NAMES:
            raise DataError(f"synthetic faces have no attribute {args.attr!r}; they have: {', '.join(ATTRIBUTE_NAMES)}")
        idx = [int(n.rsplit("/", 1)[1]) for n in names]
        seed = getattr(args, "data_seed", 0)
        return face_attributes(idx, seed=seed)[args.attr].astype(np.int64) * 2 - 1
    attr_file = args.attr_file
    if attr_file is None and args.data == "celeba":
        attr_file = Path(args.data_root or default_cache_dir() / "celeba") / "celeba" / "list_attr_celeba.txt"
    if attr_file is None:
        raise DataError(f"--attr {args.attr} on a folder needs --attr-file (CelebA-format attribute list)")
    values = read_attribute_file(attr_file, args.attr)
    by_stem = {Path(k).stem: v for k, v in values.items()}  # aligned copies may have another extension
    return np.array([values.get(Path(n).name, by_stem.get(Path(n).stem, 0)) for n in names], np.int64)


def _attribute_domain(data: FaceData, train_sign, held_sign, held_names, sign: int, name: str, attr: str) -> FaceData:
    held = [n for n, s in zip(held_names, held_sign) if s == sign]
    info = dict(data.info, domain=name, attr=attr, attr_value=sign, num_train=int((train_sign == sign).sum()),
                num_heldout=len(held), split_sha256=hashlib.sha256("\n".join(held).encode()).hexdigest(),
                source_split_sha256=data.info["split_sha256"])
    missing = int((train_sign == 0).sum() + (held_sign == 0).sum())
    if missing:
        info["skipped"] = dict(data.info.get("skipped", {}), **{"no attribute row": missing})
    return FaceData(data.train[torch.from_numpy(train_sign == sign)], data.heldout[torch.from_numpy(held_sign == sign)],
                    info)


def load_domains(cfg) -> tuple[FaceData, FaceData]:
    """Domain X and Y data (train + held-out uint8 tensors) from parsed args or an export's train_config dict.

    Two folders: each loaded like any --data folder (its own held-out split).  One source + attribute: the
    source's held-out split is kept (never trained on) and both of its parts are divided by the attribute.
    """
    args = argparse.Namespace(**cfg) if isinstance(cfg, dict) else cfg
    if args.data_x is not None:
        return tuple(_with_domain(face_data_from_args(argparse.Namespace(**{**vars(args), "data": folder})),
                                  Path(folder).name) for folder in (args.data_x, args.data_y))
    data = face_data_from_args(args)
    train_names, held_names = source_names(args, data)
    train_sign, held_sign = attribute_signs(args, train_names), attribute_signs(args, held_names)
    domains = (_attribute_domain(data, train_sign, held_sign, held_names, -1, f"not_{args.attr}", args.attr),
               _attribute_domain(data, train_sign, held_sign, held_names, +1, args.attr, args.attr))
    for d in domains:
        if len(d.train) == 0:
            raise DataError(f"{args.data}: no training images with {args.attr} = {d.info['attr_value']:+d} "
                            f"({int((train_sign == 0).sum())} without an attribute row)")
    return domains


def _with_domain(data: FaceData, name: str) -> FaceData:
    data.info["domain"] = name
    return data


# ---------------------------------------------------------------------------------------------
# Classes: one source labelled by an attribute
# ---------------------------------------------------------------------------------------------

class LabelledData:
    """FaceData restricted to images with an attribute row, plus their class labels (0: −1, 1: +1)."""

    def __init__(self, data: FaceData, train_labels: torch.Tensor, heldout_labels: torch.Tensor, attr: str):
        self.data, self.train_labels, self.heldout_labels, self.attr = data, train_labels, heldout_labels, attr
        self.class_names = [f"not_{attr}", attr]

    def counts(self) -> str:
        return ", ".join(f"{n}: {int((self.train_labels == c).sum())} train / {int((self.heldout_labels == c).sum())} "
                         f"held-out" for c, n in enumerate(self.class_names))


def load_labelled_data(cfg) -> LabelledData:
    """Train/held-out images and labels from parsed args or an export's train_config dict (the attribute reader
    above: CelebA list_attr_celeba.txt / CSV for folders and celeba, built-in attributes for synthetic).  The attribute
    is ``cond_attr`` (train_gan.py --cond-attr) or ``attr`` (exports written by the former train_acgan.py)."""
    args = argparse.Namespace(**cfg) if isinstance(cfg, dict) else cfg
    args = argparse.Namespace(**{**vars(args), "attr": getattr(args, "cond_attr", None) or args.attr})
    data = face_data_from_args(args)
    train_names, held_names = source_names(args, data)
    tr, he = attribute_signs(args, train_names), attribute_signs(args, held_names)
    keep_t, keep_h = torch.from_numpy(tr != 0), torch.from_numpy(he != 0)
    info = dict(data.info, attr=args.attr)
    missing = int((~keep_t).sum() + (~keep_h).sum())
    if missing:
        info["skipped"] = dict(info.get("skipped", {}), **{"no attribute row": missing})
        info.update(num_train=int(keep_t.sum()), num_heldout=int(keep_h.sum()))
    data = FaceData(data.train[keep_t], data.heldout[keep_h], info)
    labelled = LabelledData(data, torch.from_numpy(tr[tr != 0] > 0).long(), torch.from_numpy(he[he != 0] > 0).long(),
                            args.attr)
    for c, name in enumerate(labelled.class_names):
        if int((labelled.train_labels == c).sum()) == 0:
            raise DataError(f"{args.data}: no training images of class {name} ({missing} without an attribute row)")
    return labelled
