"""Explore the latent space of a GAN or VAE export (docs/plan.md, s002 and s004).

    python explore_latent.py --ckpt runs/<name>/export.safetensors --out runs/<name>/explore --mode all --gif
    python explore_latent.py --ckpt runs/<stylegan>/export.safetensors --out explore_w --space w --mode interp

Modes (all write into --out):
  sweep       sweep.png: one row per latent dimension, that dimension set to mean + t·σ for t in [−σ_k, +σ_k]
              (--sigma, default 3) with the other dimensions of a fixed base sample unchanged.  σ is the prior's
              (z ~ N(0, I)) or, in StyleGAN's W space, the per-dimension std of 4096 mapped samples.
  interp      interp.png: rows = screen-space (pixel crossfade of the two endpoint images), latent lerp, latent slerp
              (StyleGAN: plus lerp in the other space — Z vs W paths share their endpoints, not their middle).
              VAE: also interp_encoded.png between two ENCODED held-out images (posterior means).
  neighbours  neighbours.png (each row: sample | its --topk nearest training images) and neighbours.json with the
              distances: L2 in pixel space on 32 px copies (and in feature space with --features).  The
              memorisation indicator is the ratio of a sample's nearest-training distance to the median
              nearest-training distance of held-out real images: ratios far below 1 mean near-copies.
--gif writes a ping-pong looping GIF per mode; --mp4 also an MP4 if imageio-ffmpeg is installed (else a message).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from utils.argtypes import int_list, positive_int
from utils.figures import labelled_rows, nearest, ping_pong_frames, slerp

MODES = ("sweep", "interp", "neighbours", "all")
SUPPORTED = ("gan", "vae")
FEATURES = ("none", "tiny", "inception")
NEIGHBOUR_SIZE = 32          # pixel-space comparison resolution (blurs away sub-pixel jitter, keeps identity)
W_STATS_SAMPLES = 4096


class ExploreError(SystemExit):
    """Bad input for explore_latent.py; printed as one line."""

    def __init__(self, msg: str):
        super().__init__(f"explore_latent.py: error: {msg}")


# ------------------------------------------------------------------------------------------------ latent spaces

@dataclass
class LatentSpace:
    """One latent space of a model: how to draw points, their per-dimension statistics, and how to decode them."""
    name: str                                   # "z", "w" or "vae-z"
    dim: int
    draw: Callable[[int, torch.Generator], torch.Tensor]      # num latents (CPU float32)
    decode: Callable[[torch.Tensor], torch.Tensor]            # latents → N×3×R×R in [-1, 1] (CPU)
    mean: torch.Tensor
    std: torch.Tensor


def _in_batches(fn, x: torch.Tensor, device, batch: int = 64) -> torch.Tensor:
    """fn over chunks of x on ``device``; float32 result on the CPU."""
    with torch.no_grad():
        return torch.cat([fn(c.to(device)).float().cpu() for c in x.split(batch)])


def _decode_in_batches(fn, latents: torch.Tensor, device, batch: int = 64) -> torch.Tensor:
    return _in_batches(fn, latents, device, batch).clamp(-1, 1)


def latent_space(export, space: str = "z") -> LatentSpace:
    """The latent space named ``space`` ('z' or, for StyleGAN-lite, 'w') of a GAN or VAE export."""
    model, family = export.model.eval(), export.family
    if family not in SUPPORTED:
        raise ExploreError(f"{export.path}: family {family!r} has no latent space to explore "
                           f"(supported: {', '.join(SUPPORTED)})")
    dev = next(model.parameters()).device
    dim = int(model.latent_dim)

    def draw_z(n, g):
        return torch.randn(n, dim, generator=g)

    if space == "w":
        if not hasattr(model, "mapping"):
            raise ExploreError(f"{export.path}: --space w needs a StyleGAN-lite export (this one has no mapping network)")
        def draw_w(n, g):
            return _in_batches(model.mapping, draw_z(n, g), dev)

        ref = draw_w(W_STATS_SAMPLES, torch.Generator().manual_seed(12345))   # W has no closed-form prior
        return LatentSpace("w", dim, draw_w, lambda w: _decode_in_batches(model.synthesis, w, dev),
                           ref.mean(0), ref.std(0))
    if space != "z":
        raise ExploreError(f"unknown latent space {space!r}")
    decode = model.decode if family == "vae" else model
    return LatentSpace("vae-z" if family == "vae" else "z", dim, draw_z, lambda z: _decode_in_batches(decode, z, dev),
                       torch.zeros(dim), torch.ones(dim))


# ------------------------------------------------------------------------------------------------ paths

def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a, b: D; t: T → T×D."""
    return a[None] + t[:, None] * (b - a)[None]


def crossfade(img_a: torch.Tensor, img_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Screen-space interpolation: per-pixel blend of two images (3×R×R) → T×3×R×R."""
    return img_a[None] + t[:, None, None, None] * (img_b - img_a)[None]


def sweep_latents(base: torch.Tensor, dims: list[int], mean: torch.Tensor, std: torch.Tensor, sigma: float,
                  steps: int) -> torch.Tensor:
    """len(dims)·steps latents: row i = base with dims[i] set to mean + t·std, t in linspace(−sigma, sigma, steps)."""
    t = torch.linspace(-sigma, sigma, steps)
    rows = base[None, None].repeat(len(dims), steps, 1)
    for i, d in enumerate(dims):
        rows[i, :, d] = mean[d] + t * std[d]
    return rows.flatten(0, 1)


def interpolation_rows(space: LatentSpace, a: torch.Tensor, b: torch.Tensor, steps: int,
                       other: tuple[str, Callable[[torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor] | None = None
                       ) -> list[tuple[str, torch.Tensor]]:
    """[(label, steps×3×R×R)]: screen-space crossfade, latent lerp and slerp between latents a and b of ``space``.

    ``other`` = (name, decode, a', b'): the same endpoints in another space (StyleGAN Z ↔ W), adds a lerp row there.
    """
    t = torch.linspace(0, 1, steps)
    ends = space.decode(torch.stack([a, b]))
    rows = [("pixel crossfade", crossfade(ends[0], ends[1], t)),
            (f"{space.name} lerp", space.decode(lerp(a, b, t))),
            (f"{space.name} slerp", space.decode(slerp(a, b, t)))]
    if other is not None:
        name, decode, oa, ob = other
        rows.append((f"{name} lerp", decode(lerp(oa, ob, t))))
    return rows


# ------------------------------------------------------------------------------------------------ images

def labelled_image(rows: list[tuple[str, torch.Tensor]], pad: int = 2) -> np.ndarray:
    """One image: each row's label on the left, then its images side by side (H×W×3 uint8)."""
    from utils.images import make_grid_uint8

    return labelled_rows([make_grid_uint8(imgs, nrow=len(imgs), pad=pad) for _, imgs in rows], [lab for lab, _ in rows])


def frames_of(rows: list[tuple[str, torch.Tensor]]) -> list[np.ndarray]:
    """Animation frames: frame j shows column j of every row side by side, then back (ping-pong loop)."""
    return ping_pong_frames(torch.stack([imgs for _, imgs in rows]))


def save_animation(frames: list[np.ndarray], stem: Path, gif: bool, mp4: bool) -> list[str]:
    from utils.images import save_gif

    written = []
    if gif:
        written.append(str(save_gif(frames, stem.with_suffix(".gif"), duration_ms=120)))
    if mp4:
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio needs for MP4)
        except ImportError:
            print(f"note: --mp4 skipped for {stem.name}: install imageio-ffmpeg (pip install imageio-ffmpeg)")
            return written
        # H.264 wants even sizes: pad the frames by one white pixel where needed.
        h, w = frames[0].shape[:2]
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255) for f in frames]
        imageio.mimwrite(stem.with_suffix(".mp4"), frames, fps=8, macro_block_size=1)
        written.append(str(stem.with_suffix(".mp4")))
    return written


# ------------------------------------------------------------------------------------------------ modes

def run_sweep(space: LatentSpace, args, out: Path) -> dict:
    dims = args.dims if args.dims is not None else list(range(min(args.num_dims, space.dim)))
    bad = [d for d in dims if not 0 <= d < space.dim]
    if bad:
        raise ExploreError(f"--dims {bad} out of range for a {space.dim}-dimensional {space.name} space")
    base = space.draw(1, torch.Generator().manual_seed(args.seed))[0]
    imgs = space.decode(sweep_latents(base, dims, space.mean, space.std, args.sigma, args.steps))
    rows = [(f"{space.name}[{d}]", imgs[i * args.steps:(i + 1) * args.steps]) for i, d in enumerate(dims)]
    from utils.images import save_png
    save_png(labelled_image(rows), out / "sweep.png")
    # Which dimensions matter: mean absolute pixel change from −σ to +σ (in [0, 2] units).
    change = {str(d): float((r[-1] - r[0]).abs().mean()) for d, (_, r) in zip(dims, rows)}
    written = save_animation(frames_of(rows), out / "sweep", args.gif, args.mp4)
    return {"png": str(out / "sweep.png"), "dims": dims, "sigma": args.sigma, "steps": args.steps,
            "pixel_change_per_dim": change, "animations": written}


def run_interp(export, space: LatentSpace, args, out: Path) -> dict:
    from utils.images import save_png

    g = torch.Generator().manual_seed(args.seed)
    model = export.model
    result = {}
    if space.name in ("z", "w") and hasattr(model, "mapping"):
        z = torch.randn(2, space.dim, generator=g)
        zspace = latent_space(export, "z")
        wspace = latent_space(export, "w")
        w = _in_batches(model.mapping, z, next(model.parameters()).device)
        if space.name == "w":
            rows = interpolation_rows(wspace, w[0], w[1], args.steps, ("z", zspace.decode, z[0], z[1]))
        else:
            rows = interpolation_rows(zspace, z[0], z[1], args.steps, ("w", wspace.decode, w[0], w[1]))
    else:
        a, b = space.draw(2, g)
        rows = interpolation_rows(space, a, b, args.steps)
    save_png(labelled_image(rows), out / "interp.png")
    result["prior"] = {"png": str(out / "interp.png"), "rows": [r[0] for r in rows],
                       "animations": save_animation(frames_of(rows), out / "interp", args.gif, args.mp4)}
    if export.family == "vae":
        data = training_data(export)
        held = data.heldout[:2]
        if len(held) < 2:
            raise ExploreError("the export's held-out split has fewer than 2 images to encode")
        from utils.data import to_float
        with torch.no_grad():
            mu = model.encode(to_float(held).to(next(model.parameters()).device))[0].float().cpu()
        rows = interpolation_rows(space, mu[0], mu[1], args.steps)
        rows.insert(0, ("held-out inputs", torch.stack([to_float(held[0])] + [torch.ones_like(to_float(held[0]))]
                                                        * (args.steps - 2) + [to_float(held[1])])))
        save_png(labelled_image(rows), out / "interp_encoded.png")
        result["encoded"] = {"png": str(out / "interp_encoded.png"), "rows": [r[0] for r in rows],
                             "animations": save_animation(frames_of(rows[1:]), out / "interp_encoded", args.gif,
                                                          args.mp4)}
    return result


def training_data(export):
    """The export's train/held-out split, rebuilt from its stored data flags (utils.data.load_face_data)."""
    from utils.data import heldout_from_train_config
    return heldout_from_train_config(export.train_config, export.model.resolution)


def _small(x_uint8: torch.Tensor, size: int = NEIGHBOUR_SIZE) -> torch.Tensor:
    x = x_uint8.float() / 127.5 - 1
    if x.shape[-1] > size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


def memorisation_report(sample_d: torch.Tensor, heldout_d: torch.Tensor) -> dict:
    """Nearest-training distances of samples relative to those of held-out real images (a reference for 'novel')."""
    ref = float(heldout_d.median())
    ratios = sample_d / max(ref, 1e-12)
    return {"heldout_median_nn": ref, "sample_median_nn": float(sample_d.median()), "sample_min_nn": float(sample_d.min()),
            "min_ratio": float(ratios.min()), "median_ratio": float(ratios.median()),
            "per_sample_ratio": [float(r) for r in ratios]}


def run_neighbours(export, args, out: Path) -> dict:
    from utils.data import to_uint8
    from utils.images import make_grid_uint8, save_png

    data = training_data(export)
    train = data.train if args.max_train is None else data.train[:args.max_train]
    k = min(args.topk, len(train))
    samples = export.model.sample(args.num_samples, generator=torch.Generator().manual_seed(args.seed)).cpu()
    samples_u8 = to_uint8(samples.clamp(-1, 1))
    held = data.heldout[:max(args.num_samples, 2)]
    bank = _small(train)
    d_s, i_s = nearest(_small(samples_u8), bank, k)
    d_h, _ = nearest(_small(held), bank, 1)
    # Distances are RMS per pixel value in [-1, 1] units: L2 / sqrt(#values).
    scale = math.sqrt(bank.shape[1])
    d_s, d_h = d_s / scale, d_h / scale
    rows = torch.cat([torch.cat([samples_u8[j:j + 1], train[i_s[j]]]) for j in range(len(samples_u8))])
    save_png(make_grid_uint8(rows, nrow=k + 1), out / "neighbours.png")
    result = {"png": str(out / "neighbours.png"), "num_samples": len(samples_u8), "num_train": len(train),
              "topk": k, "pixel": {"size": min(NEIGHBOUR_SIZE, train.shape[-1]), "metric": "RMS L2 in [-1,1]",
                                   "distances": d_s.tolist(), "train_indices": i_s.tolist(),
                                   **memorisation_report(d_s[:, 0], d_h[:, 0])}}
    if args.features != "none":
        from utils.feature_nets import load_feature_extractor
        from utils.features import extract_features
        ext = load_feature_extractor(args.features, weights=args.fid_weights)
        f_train = torch.from_numpy(extract_features(train, ext))
        f_s = torch.from_numpy(extract_features(samples_u8, ext))
        f_h = torch.from_numpy(extract_features(held, ext))
        fd_s, fi_s = nearest(f_s, f_train, k)
        fd_h, _ = nearest(f_h, f_train, 1)
        result["features"] = {"extractor": args.features, "distances": fd_s.tolist(), "train_indices": fi_s.tolist(),
                              **memorisation_report(fd_s[:, 0], fd_h[:, 0])}
    return result


# ------------------------------------------------------------------------------------------------ CLI

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Latent-space exploration of a GAN or VAE export.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", type=str, required=True, help="export .safetensors (gan or vae family)")
    p.add_argument("--out", type=str, required=True, help="output folder")
    p.add_argument("--mode", type=str, default="all", choices=MODES, help="what to produce")
    p.add_argument("--space", type=str, default="z", choices=["z", "w"], help="latent space (w: StyleGAN-lite only)")
    p.add_argument("--dims", type=int_list, default=None, help="dimensions to sweep, e.g. 0,1,2 (default: first --num-dims)")
    p.add_argument("--num-dims", type=positive_int, default=8, help="dimensions to sweep when --dims is not given")
    p.add_argument("--sigma", type=float, default=3.0, help="sweep range ±sigma standard deviations")
    p.add_argument("--steps", type=positive_int, default=9, help="images per sweep / interpolation row (≥ 2)")
    p.add_argument("--num-samples", type=positive_int, default=8, help="samples checked for nearest neighbours")
    p.add_argument("--topk", type=positive_int, default=3, help="nearest training images shown per sample")
    p.add_argument("--max-train", type=positive_int, default=None, help="search only the first N training images")
    p.add_argument("--features", type=str, default="none", choices=FEATURES,
                   help="also search neighbours in this feature space (inception: clean-fid network)")
    p.add_argument("--fid-weights", type=str, default=None, help="local Inception weights for --features inception")
    p.add_argument("--gif", action="store_true", help="also write ping-pong looping GIFs")
    p.add_argument("--mp4", action="store_true", help="also write MP4s (needs imageio-ffmpeg; skipped otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the base/endpoint/neighbour samples")
    p.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be ≥ 2")
    if args.sigma <= 0:
        p.error("--sigma must be > 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from utils.export import ExportError, load_export

    try:
        export = load_export(args.ckpt, device=args.device)
    except (ExportError, FileNotFoundError) as e:
        raise ExploreError(str(e)) from None
    if export.family not in SUPPORTED:
        raise ExploreError(f"{args.ckpt}: family {export.family!r} has no latent space to explore "
                           f"(supported: {', '.join(SUPPORTED)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = latent_space(export, args.space)
    report = {"ckpt": str(Path(args.ckpt).resolve()), "family": export.family, "space": space.name, "seed": args.seed}
    modes = ("sweep", "interp", "neighbours") if args.mode == "all" else (args.mode,)
    if "sweep" in modes:
        report["sweep"] = run_sweep(space, args, out)
    if "interp" in modes:
        report["interp"] = run_interp(export, space, args, out)
    if "neighbours" in modes:
        report["neighbours"] = run_neighbours(export, args, out)
        px = report["neighbours"]["pixel"]
        print(f"nearest training image (pixel RMS): samples median {px['sample_median_nn']:.4f}, held-out median "
              f"{px['heldout_median_nn']:.4f}; min ratio {px['min_ratio']:.3f} (≪ 1 suggests memorised samples)")
    from utils.export import atomic_write_json
    atomic_write_json(out / "explore.json", report)
    print(f"wrote {', '.join(m for m in modes)} to {out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
