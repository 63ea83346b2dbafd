"""Batched vs one-image-at-a-time face alignment throughput (MTCNN detection + similarity warp).

    python bench/align_throughput.py --input /path/to/photos --limit 64 [--device cpu|cuda]

Four ways over the same decoded images (disk reads and PNG writes excluded: identical in all):
  stock-single   facenet-pytorch ``MTCNN.detect`` one image at a time (the plan's code path)
  stock-batched  facenet-pytorch ``MTCNN.detect`` on stacks of equal-size images
  ours-single    utils.align.detect_batch one image at a time
  ours-batched   utils.align.detect_batch on the whole list (what align_faces.py does)
each followed by utils.align.align_face.  Modes are interleaved over --repeats rounds and the
median is reported, so a busy machine slows all modes alike.  The headline ratio is
ours-batched / stock-single.  Landmarks of all modes are compared with stock-single.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.align import align_face, detect_batch, load_mtcnn, resolve_device  # noqa: E402
from utils.data_sources import BadImage, list_images, read_image_rgb  # noqa: E402
from utils.export import atomic_write_json  # noqa: E402
from utils.fastpath import bench_invocation, cpu_model  # noqa: E402

MODES = ("stock-single", "stock-batched", "ours-single", "ours-batched")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Batched vs single-image MTCNN alignment throughput.")
    p.add_argument("--input", type=str, required=True, help="folder of face photos (recursive)")
    p.add_argument("--limit", type=int, default=64, help="number of images (first N readable, sorted paths)")
    p.add_argument("--device", type=str, default="cpu", choices=["auto", "cpu", "cuda"], help="where MTCNN runs")
    p.add_argument("--batch-size", type=int, default=32, help="images per batched MTCNN call")
    p.add_argument("--size", type=int, default=128, help="aligned crop side")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds per mode (median reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice). On a shared, oversubscribed CPU "
                        "use 1: multi-thread barriers then stall the many small single-image ops most")
    p.add_argument("--out", type=str, default=None,
                   help="JSON result path; default docs/results/align_throughput_<device>.json")
    return p.parse_args(argv)


def read_images(folder: str, limit: int) -> list[np.ndarray]:
    images = []
    for path in list_images(folder):
        try:
            images.append(read_image_rgb(path))
        except BadImage:
            continue
        if len(images) == limit:
            break
    return images


def environment(device: torch.device) -> dict:
    import facenet_pytorch  # noqa: F401
    import skimage
    from importlib.metadata import version
    env = {"device": str(device), "torch": torch.__version__, "facenet_pytorch": version("facenet-pytorch"),
           "scikit_image": skimage.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "platform": platform.platform(), "cpu_model": cpu_model()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def stock_detect(mtcnn, images: list[np.ndarray], batched: bool, batch_size: int) -> list:
    """facenet-pytorch MTCNN.detect; returns the first (= largest, select_largest=True) face's landmarks."""
    out = [None] * len(images)
    if not batched:
        for i, img in enumerate(images):
            _, _, pts = mtcnn.detect(img, landmarks=True)
            out[i] = None if pts is None else pts[0]
        return out
    groups: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape, []).append(i)
    for idx in groups.values():
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            _, _, pts = mtcnn.detect(np.stack([images[i] for i in chunk]), landmarks=True)
            for i, p in zip(chunk, pts):
                out[i] = None if p is None else p[0]
    return out


def run_mode(mode: str, stock, ours, images, batch_size: int, size: int) -> list:
    if mode.startswith("stock"):
        landmarks = stock_detect(stock, images, mode.endswith("batched"), batch_size)
    elif mode == "ours-single":
        landmarks = [d.landmarks if d else None for img in images for d in detect_batch(ours, [img])]
    else:
        landmarks = [d.landmarks if d else None for d in detect_batch(ours, images, batch_size=batch_size)]
    for img, lm in zip(images, landmarks):
        if lm is not None:
            align_face(img, lm, size)
    return landmarks


def max_landmark_diff(a: list, b: list) -> float | None:
    diffs = [float(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)).max())
             for x, y in zip(a, b) if x is not None and y is not None]
    same_found = all((x is None) == (y is None) for x, y in zip(a, b))
    return max(diffs, default=0.0) if same_found else None


def main(argv=None) -> int:
    args = parse_args(argv)
    from facenet_pytorch import MTCNN

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = read_images(args.input, args.limit)
    if not images:
        raise SystemExit(f"error: no readable images under {args.input}")
    stock = MTCNN(keep_all=False, device=device)
    ours = load_mtcnn(device)
    for mode in MODES:  # warm-up: first calls pay for allocator and oneDNN/cuDNN primitive setup
        run_mode(mode, stock, ours, images[:4], args.batch_size, args.size)

    load_before = os.getloadavg()
    times = {m: [] for m in MODES}
    landmarks = {}
    for _ in range(args.repeats):
        for mode in MODES:
            start = time.perf_counter()
            landmarks[mode] = run_mode(mode, stock, ours, images, args.batch_size, args.size)
            times[mode].append(time.perf_counter() - start)
    rates = {m: len(images) / statistics.median(t) for m, t in times.items()}
    result = {
        "command": bench_invocation()["command"],
        "num_images": len(images), "image_sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images}),
        "batch_size": args.batch_size, "out_size": args.size, "repeats": args.repeats,
        "images_per_s": {m: round(r, 2) for m, r in rates.items()},
        "seconds_per_round": {m: [round(x, 3) for x in t] for m, t in times.items()},
        "ratio_ours_batched_vs_stock_single": round(rates["ours-batched"] / rates["stock-single"], 2),
        "ratio_stock_batched_vs_stock_single": round(rates["stock-batched"] / rates["stock-single"], 2),
        "ratio_ours_batched_vs_ours_single": round(rates["ours-batched"] / rates["ours-single"], 2),
        "faces_found": {m: sum(lm is not None for lm in v) for m, v in landmarks.items()},
        "max_landmark_diff_vs_stock_single_px": {m: max_landmark_diff(landmarks["stock-single"], v)
                                                 for m, v in landmarks.items()},
        "loadavg_before_after": [round(x, 2) for x in load_before + os.getloadavg()],
        "environment": environment(device),
    }
    for m in MODES:
        print(f"{m:14s} {rates[m]:7.1f} img/s")
    print(f"batched (ours) vs one-at-a-time (stock): {result['ratio_ours_batched_vs_stock_single']}x   "
          f"[stock batched/single {result['ratio_stock_batched_vs_stock_single']}x, "
          f"ours batched/single {result['ratio_ours_batched_vs_ours_single']}x]")
    print(f"max landmark difference vs stock-single (px): {result['max_landmark_diff_vs_stock_single_px']}")
    out = Path(args.out or f"docs/results/align_throughput_{device.type}.json")
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
