"""Sampling throughput (images/s) of the generator families, and our DDIM loop vs diffusers' DDIMPipeline.

    python bench/sample_throughput.py --family ddpm --preset default --batch 4 --steps 100      # plan 4.1 UNet, 64²
    python bench/sample_throughput.py --family ddpm --preset tiny --batch 16 --device cpu
    python bench/sample_throughput.py --ckpt runs/ddpm-4.1-linear-eps/export.safetensors --device cuda --batch 64

Every family is timed through the sampling protocol that evaluate.py uses, ``module.sample(num,
generator=...)`` ("sample"); a family may add its own variants (for DDPM: our DDIM loop in bf16 +
channels_last, and diffusers' ``DDIMPipeline`` on the same UNet, the reference the DDPM loop is measured
against).  Variants are interleaved over --repeats rounds and the median is reported, so a busy machine
slows all alike; a warm-up round (not timed) comes first.  Weights are random unless --ckpt is given:
throughput does not depend on them.  To add a family, give it a preset builder in PRESETS and, if it has
a reference implementation, a variants function in EXTRA_VARIANTS.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.export import atomic_write_json, load_export  # noqa: E402
from utils.fastpath import bench_invocation, cpu_description  # noqa: E402

Sampler = Callable[[int, torch.Generator], torch.Tensor]   # (num, generator) -> num×3×R×R in [-1, 1]


# ---------------------------------------------------------------------------------------------- models

def ddpm_preset(name: str):
    from models.ddpm import DiffusionConfig, DiffusionModel

    configs = {
        "default": DiffusionConfig(resolution=64),   # plan 4.1: base 128, attention at 8² and 16², 37M params
        "wide": DiffusionConfig(resolution=64, base_channels=192, attn_res=(8, 16, 32)),  # plan 4.4
        "tiny": DiffusionConfig(resolution=16, base_channels=16, layers_per_block=1, attn_res=(8,)),  # tests' size
    }
    if name not in configs:
        raise SystemExit(f"error: unknown ddpm preset {name!r}; known: {', '.join(configs)}")
    return DiffusionModel(configs[name])


PRESETS: dict[str, Callable[[str], torch.nn.Module]] = {"ddpm": ddpm_preset}


def ddpm_variants(model, args, device) -> dict[str, Sampler]:
    """Our loop with the speed options (where the device computes bf16 in hardware), and diffusers' DDIMPipeline
    on the very same UNet and scheduler."""
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline(unet=model.unet, scheduler=model.ddim_scheduler())
    pipe.set_progress_bar_config(disable=True)
    out: dict[str, Sampler] = {}
    from utils.fastpath import bf16_is_native
    if bf16_is_native(device):  # GPUs, and CPUs with AMX / AVX512-BF16 (oneDNN's bf16 convolutions want NHWC)
        fast = copy.deepcopy(model)  # channels_last converts the UNet in place; keep the fp32 variants' layout
        out["sample bf16+channels_last"] = lambda n, g: fast.sample(n, generator=g, steps=args.steps, eta=args.eta,
                                                                     batch_size=n, precision="bf16",
                                                                     channels_last=True)
    out["diffusers DDIMPipeline"] = lambda n, g: pipe(batch_size=n, generator=g, eta=args.eta,
                                                      num_inference_steps=args.steps, output_type="pt").images * 2 - 1
    return out


EXTRA_VARIANTS: dict[str, Callable] = {"ddpm": ddpm_variants}


def sample_kwargs(family: str, args) -> dict:
    if family == "ddpm":
        return {"steps": args.steps, "eta": args.eta, "batch_size": args.batch}
    return {}


# ---------------------------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Sampler, num: int, seed: int, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """Wall seconds and this process's CPU seconds (all threads) for one call, and its images (on the CPU)."""
    g = torch.Generator().manual_seed(seed)  # CPU generator: every variant starts from the same noise
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    x = fn(num, g)
    sync(device)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if x.shape[0] != num:
        raise RuntimeError(f"sampler returned {x.shape[0]} images, expected {num}")
    return dt, dc, x.float().cpu()


REFERENCE = "sample (fp32)"


def bench(variants: dict[str, Sampler], num: int, repeats: int, device: torch.device,
          warmup: bool = True) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[float]]]:
    """Per variant: (wall s, CPU s) of each timed round, and the mean |difference| in [-1, 1] pixel units from the
    fp32 reference's images in the same round (same seed, hence the same starting noise): what a speed option
    does to the samples themselves."""
    if warmup:  # kernels, cuDNN autotuning, allocator
        for fn in variants.values():
            time_once(fn, num, 0, device)
    times = {name: [] for name in variants}
    diffs = {name: [] for name in variants if name != REFERENCE}
    for r in range(repeats):
        # Alternate the order each round so neither variant always runs right after the other.
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        images = {}
        for name in names:
            dt, dc, images[name] = time_once(variants[name], num, r + 1, device)
            times[name].append((dt, dc))
        if REFERENCE in images:
            for name in diffs:
                diffs[name].append((images[name] - images[REFERENCE]).abs().mean().item())
    return times, diffs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Sampling throughput (images/s) per family; DDIM: ours vs DDIMPipeline.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=str, default=None, help="an export (.safetensors) to time; else --family/--preset")
    p.add_argument("--family", type=str, default="ddpm", choices=sorted(PRESETS),
                   help="family of the random-weight preset")
    src.add_argument("--preset", type=str, default="default",
                     help="model preset of --family (ddpm: default, wide, tiny)")
    p.add_argument("--batch", type=int, default=4, help="images per sampling call")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps (ddpm; plan: 100)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (ddpm)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per variant (median reported)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="one untimed round per variant first (needed on GPUs; skip for long CPU runs)")
    p.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"], help="where to sample")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=str, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--batch, --steps and --repeats must be ≥ 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    if args.ckpt:
        ex = load_export(args.ckpt, device=device)
        family, model, label = ex.family, ex.model, args.ckpt
    else:
        family, label = args.family, f"{args.family}:{args.preset} (random weights)"
        model = PRESETS[family](args.preset).to(device).eval()
    torch.backends.cudnn.benchmark = True
    kw = sample_kwargs(family, args)
    variants: dict[str, Sampler] = {REFERENCE: lambda n, g: model.sample(n, generator=g, **kw)}
    if family in EXTRA_VARIANTS:
        variants.update(EXTRA_VARIANTS[family](model, args, device))

    times, diffs = bench(variants, args.batch, args.repeats, device, args.warmup)
    params = sum(p.numel() for p in model.parameters())
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{cpu_description()}, {torch.get_num_threads()} threads"
    steps_text = f", DDIM-{args.steps} η={args.eta}" if family == "ddpm" else ""
    print(f"{label}: {params / 1e6:.2f}M params, {model.resolution}², batch {args.batch}{steps_text}, "
          f"{device.type} ({hw}); median of {args.repeats}")
    results = {}
    for name, ts in times.items():
        med = statistics.median(t for t, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        results[name] = {"seconds": [t for t, _ in ts], "cpu_seconds": [c for _, c in ts], "median_s": med,
                         "median_cpu_s": cpu, "images_per_s": args.batch / med}
        if diffs.get(name):
            results[name]["mean_abs_diff_vs_fp32"] = max(diffs[name])  # worst round; pixels in [-1, 1]
        per_step = f"  {1000 * med / args.steps:7.1f} ms/step" if family == "ddpm" else ""
        # On a shared CPU the process's CPU time is the steadier figure (wall time includes other jobs' load).
        cpu_text = f"  [CPU time {cpu:7.3f} s/batch]" if device.type == "cpu" else ""
        diff_text = f"  |x - fp32| {max(diffs[name]):.4f}" if diffs.get(name) else ""
        print(f"  {name:28s} {args.batch / med:9.3f} img/s  ({med:7.3f} s/batch){per_step}{cpu_text}{diff_text}")
    ref = results.get("diffusers DDIMPipeline")
    if ref:
        for name, r in results.items():
            if name != "diffusers DDIMPipeline":
                print(f"  speed-up of {name!r} over DDIMPipeline: {r['images_per_s'] / ref['images_per_s']:.2f}x")
    report = {"label": label, "family": family, "device": str(device), "hardware": hw, "batch": args.batch,
              "steps": args.steps if family == "ddpm" else None, "eta": args.eta, "params": params,
              "resolution": model.resolution, "torch": torch.__version__, "results": results,
              "diff_kind": "mean |x - x_fp32| over pixels in [-1, 1], same starting noise; worst timed round",
              **bench_invocation()}
    if args.out:
        atomic_write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
