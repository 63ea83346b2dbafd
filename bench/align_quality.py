"""Alignment quality on a folder of face photos: detection rate and landmark error after alignment.

    python bench/align_quality.py --input /path/to/celeba-6k --limit 500 [--template plan|celeba-mean]

Detection rate: readable photos where MTCNN finds a face with probability ≥ --min-prob.
Landmark error: each detected face is aligned to --size² and MTCNN is run again on the crop;
the error is the mean distance of the five re-detected landmarks to the reference points
(MTCNN's own landmarks, not human annotations).  Two components are reported beside it:
  fit residual       source landmarks mapped by the fitted similarity vs the reference: what a
                     similarity transform cannot remove (face shape vs template geometry);
  re-detection shift re-detected vs mapped landmarks: MTCNN's inconsistency between the photo
                     and the aligned crop.
--fit-template also prints the generalized-Procrustes mean landmark layout, placed on the chosen
template by least squares; utils/align.py's "celeba-mean" template is the mirror-symmetrised
output of  --input celeba-6k --offset 5500 --limit 500 --template plan --fit-template
(the last 500 photos, disjoint from the default evaluation on the first 500).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.align import (alignment_transform, detect_batch, load_mtcnn, reference_landmarks,  # noqa: E402
                         resolve_device, warp_face, TEMPLATES_128)
from utils.data_sources import BadImage, list_images, read_image_rgb  # noqa: E402
from utils.export import atomic_write_json  # noqa: E402

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="MTCNN detection rate and post-alignment landmark error.")
    p.add_argument("--input", type=str, required=True, help="folder of face photos (recursive)")
    p.add_argument("--limit", type=int, default=500, help="number of photos (first N after --offset, sorted paths)")
    p.add_argument("--offset", type=int, default=0,
                   help="skip the first N photos, e.g. to fit a template on photos the evaluation does not use")
    p.add_argument("--size", type=int, default=128, help="aligned crop side the error is measured at")
    p.add_argument("--template", type=str, default="plan", choices=sorted(TEMPLATES_128), help="reference landmarks")
    p.add_argument("--min-prob", type=float, default=0.9, help="detections below this probability count as misses")
    p.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"], help="where MTCNN runs")
    p.add_argument("--batch-size", type=int, default=32, help="images per MTCNN call")
    p.add_argument("--fit-template", action="store_true", help="also print the Procrustes-mean landmark template")
    p.add_argument("--out", type=str, default="docs/results/align_quality.json", help="JSON result path")
    return p.parse_args(argv)


def summarize(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    pct = np.percentile(v, [50, 90, 95, 99])
    return {"n": int(v.size), "mean": round(float(v.mean()), 3), "p50": round(float(pct[0]), 3),
            "p90": round(float(pct[1]), 3), "p95": round(float(pct[2]), 3), "p99": round(float(pct[3]), 3),
            "max": round(float(v.max()), 3)}


def procrustes_mean(shapes: np.ndarray, frame: np.ndarray, iters: int = 10) -> np.ndarray:
    """Generalized Procrustes mean of (N, 5, 2) landmark sets, placed on ``frame`` by least-squares similarity."""
    from skimage.transform import SimilarityTransform
    mean = frame
    for _ in range(iters):
        mapped = np.stack([SimilarityTransform.from_estimate(s, mean)(s) for s in shapes])
        avg = mapped.mean(0)
        mean = SimilarityTransform.from_estimate(avg, frame)(avg)
    return mean


def mirror_symmetric(shape: np.ndarray, size: int) -> np.ndarray:
    mirrored = shape[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = size - mirrored[:, 0]
    return (shape + mirrored) / 2


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    files = list_images(args.input)[args.offset: args.offset + args.limit]
    images, unreadable = [], 0
    for path in files:
        try:
            images.append(read_image_rgb(path))
        except BadImage:
            unreadable += 1
    mtcnn = load_mtcnn(device)
    ref = reference_landmarks(args.size, args.template)

    start = time.perf_counter()
    dets = detect_batch(mtcnn, images, batch_size=args.batch_size)
    found = [(img, d) for img, d in zip(images, dets) if d is not None and d.prob >= args.min_prob]
    low_conf = sum(d is not None and d.prob < args.min_prob for d in dets)
    crops, mapped, fit_residual = [], [], []
    for img, d in found:
        tform = alignment_transform(d.landmarks, args.size, args.template)
        crops.append(warp_face(img, tform.params, args.size))
        mapped.append(tform(d.landmarks))
        fit_residual.append(np.linalg.norm(mapped[-1] - ref, axis=1).mean())
    redets = detect_batch(mtcnn, crops, batch_size=args.batch_size)
    seconds = time.perf_counter() - start

    pairs = [(r.landmarks, m) for r, m in zip(redets, mapped) if r is not None]
    redetected = np.array([p[0] for p in pairs]).reshape(-1, 5, 2)
    mapped_kept = np.array([p[1] for p in pairs]).reshape(-1, 5, 2)
    per_point = np.linalg.norm(redetected - ref, axis=2)  # (n, 5)
    result = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "input": args.input, "offset": args.offset, "photos": len(files), "unreadable": unreadable,
        "template": args.template,
        "size": args.size, "min_prob": args.min_prob, "device": str(device), "seconds": round(seconds, 1),
        "detected": len(found), "low_confidence": low_conf,
        "detection_rate": round(len(found) / max(1, len(images)), 4),
        "redetected_on_aligned": len(pairs), "redetection_rate": round(len(pairs) / max(1, len(found)), 4),
        "landmark_error_px": summarize(per_point.mean(1)),
        "landmark_error_per_point_px": {n: round(float(v), 3) for n, v in zip(LANDMARK_NAMES, per_point.mean(0))},
        "fit_residual_px": summarize(fit_residual),
        "redetection_shift_px": summarize(np.linalg.norm(redetected - mapped_kept, axis=2).mean(1)),
        "reference_landmarks": ref.tolist(),
        "mean_redetected_landmarks": np.round(redetected.mean(0), 2).tolist() if len(pairs) else None,
    }
    if args.fit_template and found:
        shapes = np.stack([d.landmarks for _, d in found])
        mean = procrustes_mean(shapes, ref)
        result["procrustes_mean_template"] = np.round(mean, 2).tolist()
        result["procrustes_mean_template_symmetric"] = np.round(mirror_symmetric(mean, args.size), 1).tolist()

    err = result["landmark_error_px"]
    print(f"detection rate {result['detection_rate']:.2%} ({len(found)}/{len(images)} readable, "
          f"{low_conf} below p={args.min_prob}, {unreadable} unreadable)")
    print(f"landmark error after alignment at {args.size}² ({args.template}): mean {err.get('mean')} px, "
          f"p50 {err.get('p50')}, p90 {err.get('p90')}, p99 {err.get('p99')} "
          f"(re-detected {len(pairs)}/{len(found)})")
    print(f"  fit residual mean {result['fit_residual_px'].get('mean')} px, "
          f"re-detection shift mean {result['redetection_shift_px'].get('mean')} px")
    if "procrustes_mean_template" in result:
        print(f"procrustes mean template: {result['procrustes_mean_template']}")
        print(f"  mirror-symmetrised:     {result['procrustes_mean_template_symmetric']}")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
