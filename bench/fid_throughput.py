"""FID end to end (generate + resize + features + statistics): utils.fid_evaluator vs clean-fid's compute_fid(gen=...).

    python bench/fid_throughput.py --num-samples 10000 --device cuda                  # FID-10k at 64²
    python bench/fid_throughput.py --num-samples 128 --n-real 128 --device cpu        # CPU figures (slow Inception)
    python bench/fid_throughput.py --ckpt runs/.../export.safetensors --real aligned/ # a trained generator

Both sides see the *same* images: clean-fid's ``gen(z)`` ignores z and returns the next seed block of our
sampler, quantised to uint8 (as saved PNGs are), so |ΔFID| measures the pipelines, not sampling noise.
Both compute their own reference features of the same real folder.  Reported:

  gen_only   clean-fid's generator half of compute_fid (``get_model_features`` + mean/cov + Fréchet distance)
             vs ``FIDEvaluator.compute`` (batched exact PIL-bicubic resize on the device, no per-image CPU work);
  end_to_end ``cleanfid.fid.compute_fid(gen=G, fdir2=real_dir)`` (network load, reference folder, generator)
             vs our network load + reference features + ``compute``.

The generator is a DCGAN-64 (Radford et al. 2016) with random weights unless --ckpt is given: speed does not
depend on the weights, and FIDs of both pipelines are compared on identical images either way.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.data import to_uint8  # noqa: E402
from utils.export import atomic_write_json  # noqa: E402
from utils.feature_nets import load_feature_extractor, resolve_inception_path  # noqa: E402
from utils.features import block_seed  # noqa: E402
from utils.fid_evaluator import FIDEvaluator  # noqa: E402
from utils.fid_images import load_image_folder  # noqa: E402


class DCGANGenerator64(nn.Module):
    """Radford et al. 2016: z (100) -> 4² x 512 -> ... -> 64² x 3, transposed convs, BatchNorm, tanh."""

    def __init__(self, nz: int = 100, ngf: int = 64):
        super().__init__()
        self.nz = nz

        def up(i, o):
            return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

        self.net = nn.Sequential(nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
                                 nn.ReLU(True), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
                                 nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
        for m in self.modules():  # DCGAN init N(0, 0.02)
            if isinstance(m, (nn.ConvTranspose2d,)):
                nn.init.normal_(m.weight, 0.0, 0.02)

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(num, self.nz, 1, 1, generator=generator)
        return self.net(z.to(next(self.parameters()).device))


def build_sampler(args, device):
    if args.ckpt:
        from utils.export import load_export

        model = load_export(args.ckpt, device=device).model
        name = f"export {args.ckpt}"
    else:
        torch.manual_seed(0)
        model = DCGANGenerator64().to(device).eval()
        name = "DCGAN-64 (random weights)"
    return (lambda n, g: model.sample(n, generator=g)), name


def real_folder(args, tmp: Path) -> tuple[Path, str]:
    """A folder of real images for both pipelines (clean-fid's reference path reads folders)."""
    if args.real:
        return Path(args.real), f"folder {args.real}"
    from PIL import Image

    from utils.data import load_face_data

    data = load_face_data("synthetic", 64, n_real=args.n_real, synthetic_size=2 * args.n_real,
                          cache_dir=tmp / "cache", write_manifest=False)
    out = tmp / "real"
    out.mkdir()
    for i, img in enumerate(data.heldout):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(out / f"{i:06d}.png")
    return out, f"synthetic held-out split ({len(data.heldout)} images, PNG)"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_replayer(sample_fn, block: int, seed: int, device):
    """clean-fid's gen(z): ignores z and returns our next seed block as [0, 255] floats (the same images)."""
    state = {"b": 0}

    def gen(z):
        g = torch.Generator().manual_seed(block_seed(seed, state["b"]))
        state["b"] += 1
        return to_uint8(sample_fn(len(z), g)).float().to(device)

    return gen


def run_cleanfid(args, gen, real_dir: Path, device, weights: Path) -> dict:
    """compute_fid(gen=..., fdir2=...) with its two halves timed by wrapping the module functions it calls."""
    from cleanfid import fid as cf

    timings = {}
    originals = {name: getattr(cf, name) for name in ("get_folder_features", "get_model_features")}

    def timed(name):
        def wrapper(*a, **k):
            sync(device)
            t0 = time.perf_counter()
            out = originals[name](*a, **k)
            sync(device)
            timings[name] = time.perf_counter() - t0
            timings[name + "_result"] = out
            return out
        return wrapper

    for name in originals:
        setattr(cf, name, timed(name))
    try:
        inception = None
        if args.feature_extractor == "tiny":
            inception = load_feature_extractor("tiny", device=device)
        elif weights.parent != Path("/tmp") or weights.name != "inception-2015-12-05.pt":
            from cleanfid.inception_torchscript import InceptionV3W

            if weights.name != "inception-2015-12-05.pt":
                raise SystemExit("error: clean-fid loads its Inception as <dir>/inception-2015-12-05.pt; "
                                 f"rename {weights} or copy it to /tmp")
            inception = InceptionV3W(str(weights.parent), download=False).to(device).eval()
        sync(device)
        t0 = time.perf_counter()
        fid = cf.compute_fid(gen=gen, fdir2=str(real_dir), mode="clean", num_gen=args.num_samples, z_dim=100,
                             batch_size=args.batch_size, device=device, num_workers=args.workers, verbose=False,
                             custom_feat_extractor=inception, use_dataparallel=False)
        sync(device)
        total = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(cf, name, fn)
    feats = timings.pop("get_model_features_result")
    mu_ref_feats = timings.pop("get_folder_features_result")
    t_ref = timings["get_folder_features"]
    return {"fid": float(fid), "end_to_end_s": total, "reference_s": t_ref, "gen_only_s": total - t_ref,
            "generator_features_s": timings["get_model_features"], "fake_features": feats,
            "real_features": mu_ref_feats}


def run_ours(args, sample_fn, real_dir: Path, device, weights) -> dict:
    sync(device)
    t0 = time.perf_counter()
    extractor = load_feature_extractor(args.feature_extractor, weights=weights, device=device)
    real, _ = load_image_folder(real_dir)
    ev = FIDEvaluator.from_images(extractor, real, device=device, batch_size=args.batch_size,  # no cache: timed
                                  fd_method=args.fd_method)
    sync(device)
    t_ref = time.perf_counter() - t0
    fid = ev.compute(sample_fn, args.num_samples, batch_size=args.batch_size, seed=args.seed)
    sync(device)
    total = time.perf_counter() - t0
    return {"fid": fid, "end_to_end_s": total, "reference_s": t_ref, "gen_only_s": total - t_ref,
            "real_features": ev.real_features}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=int, default=10000, help="generated images (default: FID-10k)")
    p.add_argument("--n-real", type=int, default=5000, help="real images when --real is not given (synthetic)")
    p.add_argument("--real", type=str, default=None, help="folder of real images (default: synthetic held-out)")
    p.add_argument("--ckpt", type=str, default=None, help="export to sample from (default: random DCGAN-64)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of both pipelines")
    p.add_argument("--workers", type=int, default=8, help="clean-fid DataLoader workers for the real folder")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cpu", "cuda"], help="device for both pipelines")
    p.add_argument("--feature-extractor", type=str, default="inception", choices=["inception", "tiny"],
                   help="'tiny' times the pipelines without Inception's cost (not a reportable FID)")
    p.add_argument("--fid-weights", type=str, default=None, help="clean-fid Inception file (default as evaluate.py)")
    p.add_argument("--fd-method", type=str, default="eigh", choices=["sqrtm", "eigh"],
                   help="our Fréchet distance: 'eigh' (float64 eigendecompositions on the device) or 'sqrtm' "
                        "(clean-fid's scipy numerics; clean-fid always uses sqrtm)")
    p.add_argument("--json-out", type=str, default=None,
                   help="result file (default docs/results/fid_throughput_<device>_<extractor>.json)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    weights = resolve_inception_path(args.fid_weights) if args.feature_extractor == "inception" else None
    sample_fn, gen_name = build_sampler(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        real_dir, real_name = real_folder(args, Path(tmp))
        # Warm-up (cuDNN autotuning, lazy CUDA init) so neither side pays it inside its timing.
        warm = load_feature_extractor(args.feature_extractor, weights=weights, device=device)
        with torch.no_grad():
            warm(torch.zeros(2, 3, 299, 299, device=device))
        del warm
        ours = run_ours(args, sample_fn, real_dir, device, weights)
        theirs = run_cleanfid(args, block_replayer(sample_fn, args.batch_size, args.seed, device), real_dir,
                              device, weights)
    ref_diff = float(np.abs(ours.pop("real_features") - theirs.pop("real_features")).max())
    theirs.pop("fake_features")
    result = {
        "what": "FID end to end: utils.fid_evaluator (FIDEvaluator) vs cleanfid.fid.compute_fid(gen=..., fdir2=...)",
        "generator": gen_name, "real": real_name, "num_samples": args.num_samples, "batch_size": args.batch_size,
        "feature_extractor": args.feature_extractor, "fd_method_ours": args.fd_method, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "ours": ours, "clean_fid": theirs,
        "speedup_gen_only": theirs["gen_only_s"] / ours["gen_only_s"],
        "speedup_end_to_end": theirs["end_to_end_s"] / ours["end_to_end_s"],
        "abs_delta_fid": abs(ours["fid"] - theirs["fid"]),
        "max_abs_diff_reference_features": ref_diff,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    out = Path(args.json_out or Path(__file__).resolve().parents[1] / "docs" / "results"
               / f"fid_throughput_{device.type}_{args.feature_extractor}.json")
    atomic_write_json(out, result)
    print(f"{args.num_samples} samples, {args.feature_extractor} on {device}: "
          f"ours {ours['gen_only_s']:.1f}s gen-only / {ours['end_to_end_s']:.1f}s total, FID {ours['fid']:.4f} | "
          f"clean-fid {theirs['gen_only_s']:.1f}s / {theirs['end_to_end_s']:.1f}s, FID {theirs['fid']:.4f} | "
          f"speed-up {result['speedup_gen_only']:.2f}x gen-only, {result['speedup_end_to_end']:.2f}x end to end | "
          f"|dFID| {result['abs_delta_fid']:.2e} -> {out}")
    print(json.dumps({k: result[k] for k in ("speedup_gen_only", "speedup_end_to_end", "abs_delta_fid")}))
    return result


if __name__ == "__main__":
    main()
