"""Detect and similarity-align faces with MTCNN: a folder of photos → a folder of aligned PNGs.

    python align_faces.py --input photos/ --output aligned/ [--size 128] [--device auto]

Output PNGs mirror the input's relative paths (photos/a/b.jpg → aligned/a/b.png).  The run is
cached and resumable: every finished image is recorded in ``aligned/manifest.jsonl`` (source and
output paths relative to --input/--output, detection probability, box, landmarks, the 3×3
similarity matrix taking source (x, y) to crop (x, y), source height/width, fraction of the crop
outside the photo) or in ``aligned/failures.jsonl`` (source, reason: unreadable | no_face |
low_confidence | align_error, detail), and a re-run skips both.  Delete failures.jsonl to retry.
PNGs are written atomically, so an interrupted run leaves no half-written files.  Settings that
change the output (size, template, thresholds) are stored in ``aligned/align_config.json``; a
re-run with different settings into the same folder is refused.

See utils/align.py for the detector and the warp.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from utils.align import (TEMPLATES_128, AlignError, alignment_transform, detect_batch, load_mtcnn,
                         outside_fraction, reference_landmarks, resolve_device, warp_face)
from utils.data import aligned_output_names
from utils.data_sources import BadImage, DataError, list_images, read_image_rgb
from utils.export import atomic_write_bytes, atomic_write_json
from utils.run import oom_message

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
CONFIG = "align_config.json"
PREVIEW_FACES = 64


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MTCNN-detect and similarity-align faces into PNG crops (resumable).")
    p.add_argument("--input", type=str, required=True,
                   help="folder of photos, searched recursively (jpg/jpeg/png/webp/bmp)")
    p.add_argument("--output", type=str, required=True,
                   help="folder for aligned PNGs, manifest.jsonl and failures.jsonl")
    p.add_argument("--size", type=int, default=128,
                   help="output crop side in pixels; the reference landmarks scale with it")
    p.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"],
                   help="where MTCNN runs; auto = cuda when available")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per MTCNN call (equal-size images batch together)")
    p.add_argument("--min-prob", type=float, default=0.9,
                   help="reject detections whose O-net face probability is below this (MTCNN itself keeps ≥ 0.7)")
    p.add_argument("--min-face-size", type=int, default=20,
                   help="smallest face MTCNN searches for, in detection pixels")
    p.add_argument("--max-side", type=int, default=1024,
                   help="detect on a downscaled copy when an image's longer side exceeds this "
                        "(the warp uses the original)")
    p.add_argument("--template", type=str, default="plan", choices=sorted(TEMPLATES_128),
                   help="reference landmark layout (see utils/align.py); plan = the project plan's points")
    p.add_argument("--weights-dir", type=str, default=None,
                   help="folder with pnet.pt/rnet.pt/onet.pt state dicts; default: the weights inside facenet-pytorch")
    p.add_argument("--limit", type=int, default=None, help="only consider the first N images (sorted paths)")
    p.add_argument("--preview", action="store_true",
                   help=f"also write a grid of up to {PREVIEW_FACES} aligned faces to <output>_preview.png")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Run state: config check, manifest and failure records
# ---------------------------------------------------------------------------------------------

def run_config(args) -> dict:
    """The settings that determine the output; a folder's PNGs are only valid for one of these."""
    return {"size": args.size, "template": args.template, "min_prob": args.min_prob,
            "min_face_size": args.min_face_size, "max_side": args.max_side,
            "reference_landmarks": reference_landmarks(args.size, args.template).tolist(),
            "weights": str(Path(args.weights_dir).resolve()) if args.weights_dir else "facenet-pytorch package"}


def check_or_write_config(out_dir: Path, config: dict, input_dir: Path) -> None:
    path = out_dir / CONFIG
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise AlignError(f"{path} is unreadable; delete it or use a new --output folder") from None
        # reference_landmarks follows from size + template; it is stored for readers, not compared.
        changed = sorted(k for k in config if k != "reference_landmarks" and old.get(k) != config[k])
        if changed:
            raise AlignError(f"{out_dir} was made with different settings ({', '.join(changed)}: "
                             f"{', '.join(str(old.get(k)) for k in changed)}); use a new --output folder")
        return
    atomic_write_json(path, {**config, "input": str(input_dir.resolve())})


def read_records(path: Path) -> dict[str, dict]:
    """source → last record of a JSONL file; a torn last line from an interrupted run is ignored."""
    records = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                records[rec["source"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def append_records(path: Path, records: list[dict]) -> None:
    if records:
        with open(path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# Alignment of one batch
# ---------------------------------------------------------------------------------------------

def failure(source: str, reason: str, detail: str) -> dict:
    return {"source": source, "reason": reason, "detail": detail}


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def align_batch(mtcnn, in_dir: Path, out_dir: Path, sources: list[str], names: dict[str, str], args):
    """Read, detect, align and write one batch; returns (manifest records, failure records)."""
    done, failed, images, ok_sources = [], [], [], []
    for src in sources:
        try:
            images.append(read_image_rgb(in_dir / src))
            ok_sources.append(src)
        except BadImage as e:
            failed.append(failure(src, "unreadable", str(e)))
    dets = detect_batch(mtcnn, images, batch_size=args.batch_size, max_side=args.max_side)
    for src, img, det in zip(ok_sources, images, dets):
        if det is None:
            failed.append(failure(src, "no_face", "MTCNN found no face"))
            continue
        if det.prob < args.min_prob:
            failed.append(failure(src, "low_confidence", f"face probability {det.prob:.3f} < {args.min_prob}"))
            continue
        try:
            matrix = alignment_transform(det.landmarks, args.size, args.template).params
        except AlignError as e:
            failed.append(failure(src, "align_error", str(e)))
            continue
        atomic_write_bytes(out_dir / names[src], encode_png(warp_face(img, matrix, args.size)))
        done.append({"source": src, "output": names[src], "prob": round(det.prob, 6),
                     "box": np.round(det.box, 2).tolist(), "landmarks": np.round(det.landmarks, 2).tolist(),
                     "matrix": np.round(matrix, 6).tolist(), "image_hw": list(img.shape[:2]),
                     "outside_fraction": round(outside_fraction(matrix, img.shape, args.size), 4)})
    return done, failed


def write_preview(out_dir: Path, outputs: list[str], size: int) -> Path | None:
    """Grid of the first aligned faces, written beside (not inside) the output so it is never training data."""
    from PIL import Image
    outputs = outputs[:PREVIEW_FACES]
    if not outputs:
        return None
    cols = min(8, len(outputs))
    rows = -(-len(outputs) // cols)
    grid = Image.new("RGB", (cols * size, rows * size))
    for k, name in enumerate(outputs):
        with Image.open(out_dir / name) as face:
            grid.paste(face.convert("RGB"), ((k % cols) * size, (k // cols) * size))
    path = out_dir.parent / f"{out_dir.name}_preview.png"
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def validate_args(args) -> None:
    if args.size < 8:
        raise AlignError(f"--size must be ≥ 8, got {args.size}")
    if args.batch_size < 1:
        raise AlignError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if not 0.0 <= args.min_prob <= 1.0:
        raise AlignError(f"--min-prob must be in [0, 1], got {args.min_prob}")
    if args.min_face_size < 12 or args.max_side < args.min_face_size:
        raise AlignError("--min-face-size must be ≥ 12 and ≤ --max-side")
    if args.limit is not None and args.limit < 1:
        raise AlignError(f"--limit must be ≥ 1, got {args.limit}")


def run(args) -> str:
    validate_args(args)
    in_dir, out_dir = Path(args.input), Path(args.output)
    files = list_images(in_dir)
    out_abs = out_dir.resolve()
    if out_abs.is_relative_to(in_dir.resolve()):
        # An output folder inside the input folder must not feed its own PNGs back in on a re-run.
        files = [p for p in files if not p.resolve().is_relative_to(out_abs)]
    if not files:
        raise AlignError(f"no images under {in_dir} outside the output folder {out_dir}")
    all_sources = [str(p.relative_to(in_dir)) for p in files]
    names = aligned_output_names(all_sources)  # from the full listing, so --limit never changes a name
    sources = all_sources[: args.limit]
    device = resolve_device(args.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_or_write_config(out_dir, run_config(args), in_dir)

    aligned = {s: r for s, r in read_records(out_dir / MANIFEST).items() if (out_dir / r["output"]).exists()}
    failed = read_records(out_dir / FAILURES)
    todo = [s for s in sources if s not in aligned and s not in failed]
    skipped = len(sources) - len(todo)

    new_done, new_failed = [], []
    if todo:
        from tqdm import tqdm
        mtcnn = load_mtcnn(device, args.weights_dir, min_face_size=args.min_face_size)
        start = time.time()
        with tqdm(total=len(todo), unit="img", desc="align", dynamic_ncols=True) as bar:
            for k in range(0, len(todo), args.batch_size):
                chunk = todo[k:k + args.batch_size]
                done, fails = align_batch(mtcnn, in_dir, out_dir, chunk, names, args)
                # Records are appended after their PNGs exist: an interruption loses at most this batch.
                append_records(out_dir / MANIFEST, done)
                append_records(out_dir / FAILURES, fails)
                new_done += done
                new_failed += fails
                bar.update(len(chunk))
        rate = len(todo) / max(time.time() - start, 1e-9)
    if args.preview:
        listed = set(sources)
        outputs = [r["output"] for r in sorted({**aligned, **{r["source"]: r for r in new_done}}.values(),
                                               key=lambda r: r["source"]) if r["source"] in listed]
        path = write_preview(out_dir, outputs, args.size)
        if path:
            print(f"preview: {path}")
    reasons = Counter(r["reason"] for r in new_failed)
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    speed = f" ({rate:.1f} img/s on {device.type})" if todo else ""
    return (f"aligned {len(new_done)}, failed {len(new_failed)}" + (f" ({by_reason})" if by_reason else "")
            + f", skipped {skipped} already done{speed} -> {out_dir}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        print(run(args))
    except (AlignError, DataError) as e:
        msg = str(e.code if isinstance(e, SystemExit) else e)
        print(msg if msg.startswith("error:") else f"error: {msg}", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError as e:
        print(oom_message(e, f"lower --batch-size (now {args.batch_size}) or --max-side (now {args.max_side}); "
                             f"finished images are recorded in {args.output}, re-run to resume"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; finished images are recorded in {args.output}, re-run to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
