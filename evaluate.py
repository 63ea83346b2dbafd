"""Evaluate a generator export (any family) or a folder of samples; write metrics.json.

    python evaluate.py --ckpt runs/gan-.../export/ema.safetensors            # 5000 samples vs held-out split
    python evaluate.py --ckpt ddpm.safetensors --sample-steps 250 --eta 0     # DDPM sampling options
    python evaluate.py --fake-dir samples/ --real aligned_faces/              # folders, no checkpoint
    python evaluate.py --ckpt export.safetensors --real-floor                 # training photos vs held-out: the floor
    accelerate launch --multi_gpu --num_processes 2 evaluate.py --ckpt ...    # same numbers, split over 2 GPUs

The model is rebuilt from the export alone (no architecture flags).  The real reference is the export's
held-out split (re-derived from the data settings in its train_config) or ``--real DIR``.  Samples are
saved as PNG, never JPEG (lossless, so FID on the saved folder equals FID in memory).

metrics.json, schema_version 1 (``utils.metrics_schema.read_metrics`` validates it):
  schema_version, created, command, fid_mode ("clean")
  source            kind ("export"|"folder"|"floor"), path, sha256, family, step, epoch, weights ("ema"|"raw")
  samples           n, seed, block_size, seeding, sample_kwargs, sampler (DDPM: DDIM settings), resolution,
                    saved_png, dir
  real              source, split, n, split_sha256, pixels_sha256, resolution, crop, cache_path, cache_hit
                    (+ ref_stats, ref_stats_sha256 with --ref-stats)
  feature_extractor name, dim, input_size, path, sha256 (+ sha256_matches_clean_fid for Inception)
  metrics           fid, kid, precision, recall, inception_score, lpips_diversity, params_generator,
                    params_total, train_seconds, sampling_throughput, and (files written since they exist;
                    older files lack them and still validate) density, coverage, fd_dinov2: each
                    {"value": number|null, ...}; null values carry "not_computed": reason — never a
                    placeholder number; computed metrics on a network's outputs name it in "features"
                    (+ "features_name", "features_sha256") and carry their sample counts ("num_samples",
                    "num_real"); Fréchet distances (fid, fd_dinov2) also "feature_dim" and "biased"
                    (true when n ≤ feature_dim: singular covariances, see utils.metric_math.fd_sample_counts)
  pr_feature_extractor  only with --pr-features vgg16: the P/R network (as feature_extractor, + layer)
  dinov2_feature_extractor  only with fd_dinov2: the DINOv2 network (as feature_extractor)
  versions          python and library versions
  runtime           device, num_processes, wall_seconds, sampling_seconds, feature_seconds, ...
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models import TRANSLATION_FAMILIES
from models.cyclegan import DIRECTION_DOMAINS
from utils.argtypes import nonneg_int, positive_int
from utils.attributes import load_domains
from utils.class_eval import evaluate_acgan
from utils.data import heldout_from_train_config
from utils.aux_metric_nets import PR_FEATURES, load_is_classifier, load_vgg16_features
from utils.dinov2_features import DINOV2_TINY, DINOV2_WEIGHTS_ENV
from utils.feature_nets import MetricsError, file_sha256, load_feature_extractor
from utils.features import BlockFeatures, distributed_extract, generate_and_extract
from utils.fid_evaluator import FIDEvaluator
from utils.fid_images import load_image_folder, pixels_sha256
from utils.metric_math import FD_METHODS, inception_score, lpips_diversity
from utils.metrics_schema import (FID_MODE, METRIC_NAMES, METRICS_SCHEMA_VERSION, OPTIONAL_METRIC_NAMES,
                                  MetricsFileError, not_computed, write_metrics)
from utils.reference_stats import load_reference_statistics, reference_key, save_reference_statistics
from utils.run import close_process_group, oom_message

# pr = precision + recall (Kynkäänniemi et al. 2019), dc = density + coverage (Naeem et al. 2020), both on the P/R
# features; fd_dinov2 = Fréchet distance in DINOv2 ViT-L/14 space (Stein et al. 2023; opt-in: a 300M-parameter
# ViT whose weights may have to be fetched).
ALL_METRICS = ("fid", "kid", "pr", "dc", "is", "lpips", "params", "throughput", "fd_dinov2")
DEFAULT_METRICS = tuple(m for m in ALL_METRICS if m != "fd_dinov2")
DEFAULT_N_REAL = 5000


def metric_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ALL_METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {', '.join(bad) or '(none)'}; "
                                         f"choose from {','.join(ALL_METRICS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", type=str, default=None, help="export file (.safetensors) written by a trainer")
    src.add_argument("--fake-dir", type=str, default=None, help="evaluate an existing folder of samples instead")
    p.add_argument("--num-samples", type=positive_int, default=5000,
                   help="generated images (with --fake-dir: use at most this many, in sorted order)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="images per sampling call and per feature batch; also the seed-block size")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (block b uses a generator seeded by (seed, b))")
    p.add_argument("--sample-steps", type=positive_int, default=None,
                   help="DDPM only: sampling steps (default: the model's)")
    p.add_argument("--eta", type=float, default=None,
                   help="DDPM only: DDIM eta (0 = deterministic; default: the model's)")
    p.add_argument("--sample-precision", type=str, default=None, choices=["fp32", "bf16", "fp16"],
                   help="DDPM only: UNet autocast while sampling (the DDIM update stays fp32). bf16 changes the "
                        "samples slightly (docs/PERFORMANCE.md: mean |difference| per pixel) and is the fast path "
                        "on GPUs and AMX CPUs; default fp32")
    p.add_argument("--channels-last", action="store_true",
                   help="DDPM only: sample with an NHWC UNet (speed; same maths up to convolution algorithms)")
    p.add_argument("--out", type=str, default=None,
                   help="output folder (default: <export stem>_eval/ beside the export, or <fake-dir>_eval/)")
    p.add_argument("--metrics", type=metric_list, default=list(DEFAULT_METRICS),
                   help=f"comma-separated subset of {','.join(ALL_METRICS)} (default: all but fd_dinov2). "
                        "pr = precision/recall, dc = density/coverage (Naeem et al. 2020), fd_dinov2 = Fréchet "
                        "distance in DINOv2 ViT-L/14 features (dgm-eval / EDM2's FD_DINOv2)")
    p.add_argument("--feature-extractor", type=str, default="inception", choices=["inception", "tiny"],
                   help="'inception' (clean-fid's, reportable) or 'tiny' (seeded random net for tests/CPU smoke runs)")
    p.add_argument("--fid-weights", type=str, default=None,
                   help="local clean-fid inception-2015-12-05.pt (default: $FACEGEN_FID_WEIGHTS, /tmp, or download)")
    p.add_argument("--is-weights", type=str, default=None,
                   help="torchvision inception_v3 ImageNet state dict for Inception Score (IS is skipped without it)")
    p.add_argument("--lpips-weights", type=str, default=None,
                   help="torchvision AlexNet state dict for LPIPS (default: torch hub cache or download); "
                        "'random' = random trunk, tests only")
    p.add_argument("--lpips-samples", type=positive_int, default=100, help="images for pairwise LPIPS diversity")
    p.add_argument("--fd-method", type=str, default="sqrtm", choices=list(FD_METHODS),
                   help="Fréchet distance: 'sqrtm' (clean-fid's numerics) or 'eigh' (same to ~1e-6, much faster)")
    p.add_argument("--pr-k", type=positive_int, default=3, help="k of the k-NN manifolds for precision/recall")
    p.add_argument("--dc-k", type=positive_int, default=5,
                   help="k of the k-NN balls for density/coverage (Naeem et al. 2020 use 5)")
    p.add_argument("--dinov2-weights", type=str, default=None,
                   help=f"DINOv2 ViT-L/14 weights for fd_dinov2: timm's model.safetensors or Meta's "
                        f"dinov2_vitl14_pretrain.pth (default: ${DINOV2_WEIGHTS_ENV}, else the Hugging Face hub); "
                        f"'{DINOV2_TINY}' = a random tiny ViT of the same class, tests only")
    p.add_argument("--pr-features", type=str, default="inception", choices=list(PR_FEATURES),
                   help="features for precision/recall: 'inception' = the FID network's (--feature-extractor), or "
                        "'vgg16' (as in Kynkäänniemi et al. 2019 / StyleGAN2-ADA; needs --pr-vgg-weights)")
    p.add_argument("--pr-vgg-weights", type=str, default=None,
                   help="torchvision vgg16 state dict for --pr-features vgg16 (default $FACEGEN_VGG_WEIGHTS): with "
                        "the classifier, fc2 (4096-d) is used; conv weights up to relu3_3 only give relu3_3 "
                        "average-pooled (256-d); metrics.json records which")
    p.add_argument("--real-floor", action="store_true",
                   help="with --ckpt: score --num-samples of the export's TRAINING images (a seeded draw) against its "
                        "held-out reference instead of samples: the real-vs-real floor of this data at these counts")
    p.add_argument("--real", type=str, default=None,
                   help="folder of real images as the reference (default: the export's held-out split)")
    p.add_argument("--n-real", type=positive_int, default=None,
                   help=f"use the first N reference images (default: the whole held-out split; {DEFAULT_N_REAL} "
                        "for --real)")
    p.add_argument("--save-samples", type=nonneg_int, default=None,
                   help="how many samples to save as PNG (default: all; 0 = none)")
    p.add_argument("--ref-stats", type=str, default=None,
                   help="reference = this statistics file instead of images: clean-fid custom statistics (.npz with "
                        "mu, sigma; + <name>_kid.npz features for KID/P/R/density/coverage) with the sidecar .json "
                        "that --write-ref-stats writes (a clean-fid file without one: Inception only)")
    p.add_argument("--write-ref-stats", type=str, default=None,
                   help="also write the reference's feature statistics to PATH.npz (+ PATH_kid.npz, PATH.json: "
                        "network, mode, crop, resolution, image count, split hash), for --ref-stats elsewhere")
    p.add_argument("--stats-cache", type=str, default=None,
                   help="reference-statistics cache (default $FACEGEN_CACHE/fid_stats or ~/.cache/facegen/fid_stats)")
    p.add_argument("--mode", type=str, default="auto", choices=["auto", "sample", "translate"],
                   help="sample: unconditional generation; translate: image-to-image (CycleGAN) held-out X→Y and "
                        "Y→X, FID per direction against the other domain's held-out images; auto: by family")
    p.add_argument("--class-samples", type=nonneg_int, default=None,
                   help="ACGAN: generated images per class for per-class FID and classifier accuracy "
                        "(default: num-samples / classes; 0 = skip)")
    p.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is available")
    return p


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def default_out_dir(args) -> Path:
    if args.out:
        return Path(args.out)
    if args.ckpt:
        ck = Path(args.ckpt)
        return ck.with_name(ck.stem + ("_floor" if args.real_floor else "_eval"))
    fake = Path(args.fake_dir).resolve()
    return fake.with_name(fake.name + "_eval")


def sample_kwargs(args, family: str) -> dict:
    kw = {}
    if args.sample_steps is not None:
        kw["steps"] = args.sample_steps
    if args.eta is not None:
        kw["eta"] = args.eta
    if args.sample_precision is not None:
        kw["precision"] = args.sample_precision
    if args.channels_last:
        kw["channels_last"] = True
    if kw and family != "ddpm":
        raise MetricsError(f"--sample-steps/--eta/--sample-precision/--channels-last apply to ddpm exports only; "
                           f"this export is {family!r}")
    return kw


def generator_params(model: torch.nn.Module) -> tuple[int, str]:
    """Parameters used for sampling ("G"), and which sub-module they were counted from."""
    for attr in ("generator", "decoder"):
        sub = getattr(model, attr, None)
        if isinstance(sub, torch.nn.Module):
            return sum(p.numel() for p in sub.parameters()), f"model.{attr}"
    return sum(p.numel() for p in model.parameters()), "whole model (no .generator/.decoder sub-module)"


def floor_images(args, data) -> tuple[torch.Tensor, dict, dict]:
    """(images, source, samples) of --real-floor: --num-samples training images drawn without replacement (seeded
    by --seed) from the export's own split, so they are scored against exactly the held-out set its samples are."""
    if args.num_samples > len(data.train):
        raise MetricsError(f"--real-floor: --num-samples {args.num_samples} exceeds the training split "
                           f"({len(data.train)} images)")
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(args.seed))[:args.num_samples]
    images = data.train[pick]
    source = {"kind": "floor", "path": data.info["source"], "sha256": pixels_sha256(images), "family": None,
              "step": None, "epoch": None, "weights": None, "what": "training images, not a model"}
    samples = {"n": len(images), "seed": args.seed, "block_size": None, "sample_kwargs": {},
               "seeding": "torch.randperm(num_train, generator seeded by --seed)[:n] of the training split",
               "resolution": int(images.shape[-1]), "saved_png": 0, "dir": None}
    return images, source, samples


def real_images_for(args, export, data=None):
    """(images, provenance) of the reference set: --real folder or the export's held-out split (``data``: that
    split already loaded)."""
    if args.real:
        images, info = load_image_folder(args.real, limit=args.n_real or DEFAULT_N_REAL)
        return images, {"source": info["folder"], "split": "folder", "split_sha256": info["pixels_sha256"],
                        "pixels_sha256": info["pixels_sha256"], "resolution": "native (resized to 299 by clean-fid)",
                        "crop": "none (files as they are)", "num_files": info["num_files"],
                        "skipped_unreadable": info["skipped_unreadable"]}
    if export is None:
        raise MetricsError("--fake-dir needs --real DIR (there is no export to take a held-out split from)")
    data = data or heldout_from_train_config(export.train_config, export.model.resolution)
    real = data.heldout
    if args.n_real is not None:
        if args.n_real > len(real):
            raise MetricsError(f"--n-real {args.n_real} exceeds the held-out split ({len(real)} images)")
        real = real[:args.n_real]
    return real, {"source": data.info["source"], "split": "heldout", "split_sha256": data.info["split_sha256"],
                  "pixels_sha256": pixels_sha256(real), "resolution": int(real.shape[-1]),
                  "crop": export.train_config.get("crop", "center"), "num_files": len(real),
                  "heldout_size": len(data.heldout), "manifest_path": data.info.get("manifest_path")}


# ---------------------------------------------------------------------------------------------
# Metric blocks
# ---------------------------------------------------------------------------------------------

def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "numpy", "scipy", "pillow", "clean-fid", "lpips", "accelerate", "safetensors"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def lpips_entry(args, head_images: torch.Tensor, device) -> dict:
    from utils.aux_metric_nets import load_lpips

    if "lpips" not in args.metrics:
        return not_computed("not requested (--metrics)")
    if head_images is None:
        return not_computed("samples differ in size")
    if len(head_images) < 2 or min(head_images.shape[-2:]) < 32:
        return not_computed(f"LPIPS-Alex needs ≥ 2 images of ≥ 32 px, got {tuple(head_images.shape)}")
    net, info = load_lpips(args.lpips_weights, device)
    if net is None:
        return not_computed(info["not_computed"])
    return {**lpips_diversity(head_images, net, max_images=args.lpips_samples, device=device), **info,
            "features": f"lpips alex ({info['backbone'].split(' — ')[0]} trunk + lpips v0.1 linear heads)",
            "features_name": "lpips-alex", "features_sha256": info.get("backbone_sha256")}


def is_entry(args, logits, classifier) -> dict:
    if "is" not in args.metrics:
        return not_computed("not requested (--metrics)")
    if logits is None:
        return not_computed(load_is_classifier(None)[1])
    if len(logits) < 10:
        return not_computed(f"Inception Score uses 10 splits and needs ≥ 10 samples, got {len(logits)}")
    mean, std = inception_score(logits, splits=10)
    return {"value": mean, "std": std, "splits": 10, "num_images": len(logits), "std_ddof": 0,
            "classifier": classifier.describe(), "features": "torchvision inception-v3 ImageNet logits (1000 classes)",
            "features_name": classifier.name, "features_sha256": classifier.sha256}


def fill_metrics(metrics: dict, wanted: list[str]) -> dict:
    """Every schema metric present: missing ones become explicit 'not requested' / 'not applicable' entries."""
    by_flag = {"fid": "fid", "kid": "kid", "precision": "pr", "recall": "pr", "inception_score": "is",
               "lpips_diversity": "lpips", "params_generator": "params", "params_total": "params",
               "sampling_throughput": "throughput", "train_seconds": "params", "density": "dc", "coverage": "dc",
               "fd_dinov2": "fd_dinov2"}
    for name in (*METRIC_NAMES, *OPTIONAL_METRIC_NAMES):
        if name not in metrics:
            flag = by_flag[name]
            metrics[name] = not_computed("not requested (--metrics)" if flag not in wanted
                                         else "needs a checkpoint (evaluating a folder)")
    return metrics


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def run(args) -> dict | None:
    from accelerate import Accelerator

    t_start = time.perf_counter()
    check_reference_flags(args)
    # cpu=True on a CPU-only machine is what makes accelerate treat torchrun/accelerate-launch processes as a
    # distributed (gloo) group; without it each process would silently evaluate everything alone.
    acc = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    device, is_main = acc.device, acc.is_main_process
    out_dir = default_out_dir(args)
    save_n = args.num_samples if args.save_samples is None else min(args.save_samples, args.num_samples)
    sample_dir = out_dir / "samples"
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.ckpt:
            # Stale PNGs of an earlier, larger run would mix into the folder; remove only our own file names.
            for old in sample_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
                old.unlink()
            if save_n:
                sample_dir.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()

    extractor = load_feature_extractor(args.feature_extractor, weights=args.fid_weights, device=device)
    classifier = None
    if "is" in args.metrics and args.is_weights:
        classifier, _ = load_is_classifier(args.is_weights, device)
    need_head = args.lpips_samples if "lpips" in args.metrics else 0
    metrics, runtime = {}, {"device": str(device), "num_processes": acc.num_processes}
    pr_net = pr_network(args, device)
    pr_fake = BlockFeatures(pr_net, batch_size=args.batch_size, device=device) if pr_net else None
    dino_net = dinov2_network(args, device)
    dino_fake = BlockFeatures(dino_net, batch_size=args.batch_size, device=device) if dino_net else None
    export = None
    if args.ckpt:
        from utils.export import load_export

        export = load_export(args.ckpt, device=device)
        mode = args.mode if args.mode != "auto" else ("translate" if export.family in TRANSLATION_FAMILIES else "sample")
        if (mode == "translate") != (export.family in TRANSLATION_FAMILIES):
            raise MetricsError(f"--mode {mode} does not fit a {export.family!r} export (translation families: "
                               f"{', '.join(TRANSLATION_FAMILIES)}; use --mode auto)")
    # After the export is known to load: a bad input ends with its one-line error and nothing else.
    if is_main and args.mode != "translate" and (export is None or export.family not in TRANSLATION_FAMILIES):
        warn_biased(args, extractor, dino_net)
    floor_data = None
    if args.real_floor:
        if export is None or mode != "sample" or args.real:
            raise MetricsError("--real-floor needs --ckpt of a sampling export and no --real (the export's data config "
                               "names both the training and the held-out images)")
        floor_data = heldout_from_train_config(export.train_config, export.model.resolution)
    if args.ckpt and not args.real_floor:
        if mode == "translate":
            return run_translate(args, acc, export, extractor, out_dir, save_n, t_start, pr_net, dino_net)
        kw = sample_kwargs(args, export.family)
        model = export.model
        if export.weights != "ema":
            acc.print(f"note: {args.ckpt} holds {export.weights!r} weights, not EMA")

        def sample_fn(num, g):
            return model.sample(num, generator=g, **kw)

        def save_block(start, u8):
            from utils.images import save_png
            for i in range(min(len(u8), max(save_n - start, 0))):
                save_png(u8[i].permute(1, 2, 0).cpu().numpy(), sample_dir / f"{start + i:06d}.png")

        t0 = time.perf_counter()
        gen = generate_and_extract(sample_fn, args.num_samples, extractor, block_size=args.batch_size,
                                   seed=args.seed, device=device, classifier=classifier, accelerator=acc,
                                   keep_images=need_head, on_block=chain(save_block, pr_fake, dino_fake),
                                   desc="sampling + features")
        runtime.update(sampling_seconds=gen.sampling_seconds, generate_and_features_seconds=time.perf_counter() - t0)
        fake_feats, logits, head = gen.features, gen.logits, gen.head_images
        g_params, g_rule = generator_params(model)
        if "params" in args.metrics:
            metrics["params_generator"] = {"value": g_params, "counted_from": g_rule}
            metrics["params_total"] = {"value": sum(p.numel() for p in model.parameters())}
            metrics["train_seconds"] = {"value": float(export.train_seconds), "from": "export metadata"}
        if "throughput" in args.metrics:
            metrics["sampling_throughput"] = {"value": args.num_samples / max(gen.sampling_seconds, 1e-9),
                                              "unit": "images/s", "batch_size": args.batch_size,
                                              "device": str(device), "num_processes": acc.num_processes,
                                              "sample_kwargs": kw}
        source = {"kind": "export", "path": str(Path(args.ckpt).resolve()), "sha256": file_sha256(args.ckpt),
                  "family": export.family, "step": export.step, "epoch": export.epoch, "weights": export.weights}
        samples = {"n": args.num_samples, "seed": args.seed, "block_size": args.batch_size,
                   "seeding": "block b = samples [b*block_size, (b+1)*block_size) drawn with "
                              "torch.Generator seeded by utils.features.block_seed(seed, b)",
                   "sample_kwargs": kw, "resolution": int(model.resolution), "saved_png": save_n,
                   "dir": str(sample_dir) if save_n else None}
        if hasattr(model, "sampler_settings"):   # a DDPM: its DDIM settings decide the samples as much as the weights
            samples["sampler"] = model.sampler_settings(kw.get("steps"), kw.get("eta"),
                                                        precision=kw.get("precision", "fp32"))
    else:
        if args.mode == "translate":
            raise MetricsError("--mode translate needs --ckpt (a CycleGAN export)")
        if floor_data is not None:
            fake_images, source, samples = floor_images(args, floor_data)
            for name in ("params_generator", "params_total", "train_seconds", "sampling_throughput"):
                metrics[name] = not_computed("real training images, not a model")
        else:
            fake_images, finfo = load_image_folder(args.fake_dir, limit=args.num_samples)
        t0 = time.perf_counter()
        fake_feats, logits = distributed_extract(fake_images, extractor, batch_size=args.batch_size, device=device,
                                                 classifier=classifier, accelerator=acc,
                                                 on_block=chain(pr_fake, dino_fake), desc="features")
        runtime["fake_feature_seconds"] = time.perf_counter() - t0
        if floor_data is not None:
            head = fake_images[:need_head] if need_head else None
        else:
            same_size = len({a.shape for a in fake_images[:need_head]}) == 1
            head = torch.from_numpy(np.stack(fake_images[:need_head])).permute(0, 3, 1, 2) \
                if need_head and same_size else None
    if args.fake_dir:
        source = {"kind": "folder", "path": finfo["folder"], "sha256": finfo["pixels_sha256"], "family": None,
                  "step": None, "epoch": None, "weights": None}
        samples = {"n": finfo["n"], "seed": None, "block_size": None, "seeding": "existing folder",
                   "sample_kwargs": {}, "resolution": int(fake_images[0].shape[0]), "saved_png": 0,
                   "dir": finfo["folder"], "skipped_unreadable": finfo["skipped_unreadable"]}

    if args.ref_stats:
        mu, sigma, ref_feats, real_info = load_reference_statistics(args.ref_stats, extractor)
        real_images = None
        ev = FIDEvaluator.from_statistics(extractor, mu, sigma, features=ref_feats, device=device,
                                          batch_size=args.batch_size, accelerator=acc, info=real_info,
                                          fd_method=args.fd_method)
    else:
        real_images, real_info = real_images_for(args, export, floor_data)
        key = reference_key(source=real_info["source"], split_sha256=real_info["split_sha256"],
                            pixels_sha256=real_info["pixels_sha256"], resolution=real_info["resolution"],
                            n=len(real_images), extractor=extractor)
        ev = FIDEvaluator.from_images(extractor, real_images, device=device, batch_size=args.batch_size,
                                      cache_key=key, cache_dir=args.stats_cache, accelerator=acc, info=real_info,
                                      fd_method=args.fd_method, desc="reference features")
        if args.write_ref_stats and is_main:
            shared = {k: real_info.get(k) for k in ("source", "split", "split_sha256", "pixels_sha256", "resolution",
                                                    "crop", "num_files", "heldout_size") if k in real_info}
            written = save_reference_statistics(args.write_ref_stats, extractor, ev.real_features, shared)
            print(f"reference statistics ({len(ev.real_features)} images, {extractor.name}) -> "
                  f"{', '.join(str(w) for w in written)}")
    runtime["reference_seconds"] = ev.info.get("reference_seconds", 0.0)
    want = [m for m in ("fid", "kid", "pr", "dc") if m in args.metrics]
    pr_metrics = pr_metrics_fn(args, acc, pr_net, pr_fake, real_images, real_info, want)
    dino_metrics = dinov2_metrics_fn(args, acc, dino_net, dino_fake, real_images, real_info)
    if not is_main:
        return None

    metrics.update(ev.metrics(fake_feats, want=[m for m in want if not (pr_net and m in ("pr", "dc"))], k=args.pr_k,
                              dc_k=args.dc_k))
    metrics.update(pr_metrics())
    metrics.update(dino_metrics())
    metrics["inception_score"] = is_entry(args, logits, classifier)
    metrics["lpips_diversity"] = lpips_entry(args, head, device)
    extra = {}
    if export is not None and export.family == "acgan" and "fid" in args.metrics:
        extra["per_class"] = per_class_entry(args, export, extractor, device)
    runtime["wall_seconds"] = time.perf_counter() - t_start
    if pr_net is not None:
        extra["pr_feature_extractor"] = pr_net.describe()
    if dino_net is not None:
        extra["dinov2_feature_extractor"] = dino_net.describe()
    result = assemble(args, source, samples, {**ev.info, "n": ev.num_real}, extractor, metrics, runtime, extra)
    write_metrics(out_dir / "metrics.json", result)
    print(summary_line(result, out_dir))
    refresh_model_card(args, out_dir / "metrics.json")
    return result


def check_reference_flags(args) -> None:
    if args.ref_stats and (args.real or args.write_ref_stats or args.n_real):
        raise MetricsError("--ref-stats is the reference: it cannot be combined with --real, --n-real or "
                           "--write-ref-stats")
    if args.ref_stats and args.mode == "translate":
        raise MetricsError("--ref-stats applies to sampling and folder evaluation, not --mode translate "
                           "(each direction has its own reference)")


def warn_biased(args, extractor, dino_net) -> None:
    """Say up front when the requested sample counts make a Fréchet distance biased (n ≤ feature dimension);
    the metrics.json entries record it and compare.py's tables footnote it."""
    n = min(args.num_samples, args.n_real or args.num_samples)
    nets = [("FID", extractor)] if "fid" in args.metrics else []
    nets += [("FD-DINOv2", dino_net)] if dino_net is not None else []
    for what, net in nets:
        if n <= net.dim:
            print(f"warning: {what} from {n} samples with {net.dim}-d {net.name} features is biased (n ≤ d: singular "
                  f"covariance; compare it only with values at the same n); use ≥ {net.dim + 1} samples for a "
                  "reportable number. KID (unbiased at small n) is reported beside it.", file=sys.stderr)


def refresh_model_card(args, metrics_path: Path) -> None:
    """Rewrite the model card (README.md) beside a run's export.safetensors with these metrics."""
    if not args.ckpt or args.real_floor or Path(args.ckpt).name != "export.safetensors":
        return
    from utils.model_card import write_model_card

    try:
        card = write_model_card(args.ckpt, metrics_path)
        print(f"model card -> {card}")
    except (OSError, ValueError) as e:
        print(f"warning: model card not refreshed ({str(e).splitlines()[0][:120]})", file=sys.stderr)


def pr_network(args, device):
    """The VGG-16 precision/recall (and density/coverage) network, or None when they use the FID features."""
    if args.pr_features != "vgg16" or not {"pr", "dc"} & set(args.metrics):
        return None
    return load_vgg16_features(args.pr_vgg_weights, device)


def dinov2_network(args, device):
    """The DINOv2 network for fd_dinov2, or None when not requested."""
    if "fd_dinov2" not in args.metrics:
        return None
    return load_feature_extractor("dinov2", weights=args.dinov2_weights, device=device)


def dinov2_metrics_fn(args, acc, dino_net, dino_fake, real_images, real_info: dict, cache_source=None):
    """Collective part of FD-DINOv2 (reference features, cached like the FID ones; gathered fake features; all
    processes call it); returns a function giving {'fd_dinov2': entry} (an empty dict when not requested)."""
    if dino_net is None:
        return dict
    fake = dino_fake.gather(acc)
    if real_images is None:
        return lambda: {"fd_dinov2": not_computed("the reference is a --ref-stats file of the FID network only; "
                                                  "FD-DINOv2 needs the reference images")}
    key = reference_key(source=cache_source or real_info["source"], split_sha256=real_info["split_sha256"],
                        pixels_sha256=real_info["pixels_sha256"], resolution=real_info["resolution"],
                        n=len(real_images), extractor=dino_net)
    dino_ev = FIDEvaluator.from_images(dino_net, real_images, device=acc.device, batch_size=args.batch_size,
                                       cache_key=key, cache_dir=args.stats_cache, accelerator=acc,
                                       fd_method=args.fd_method, desc="reference DINOv2 features")
    return lambda: {"fd_dinov2": {**dino_ev.metrics(fake, want=["fid"])["fid"],
                                  "reference": "Stein et al. 2023 (dgm-eval); EDM2's FD_DINOv2"}}


def chain(*fns):
    """One on_block callback calling each given one (None entries skipped)."""
    fns = [f for f in fns if f is not None]
    return (lambda start, block: [f(start, block) for f in fns]) if fns else None


def pr_metrics_fn(args, acc, pr_net, pr_fake, real_images, real_info: dict, want, cache_source=None):
    """Collective part of VGG precision/recall (reference features, gathered fake features; all processes call
    it); returns a function giving the precision/recall entries (an empty dict without a P/R network)."""
    if pr_net is None or not {"pr", "dc"} & set(want):
        return dict
    if real_images is None:
        names = [m for flag, pair in (("pr", ("precision", "recall")), ("dc", ("density", "coverage")))
                 if flag in want for m in pair]
        return lambda: {m: not_computed("the reference is a --ref-stats file of the FID network only; "
                                        "VGG-16 features need the reference images") for m in names}
    key = reference_key(source=cache_source or real_info["source"], split_sha256=real_info["split_sha256"],
                        pixels_sha256=real_info["pixels_sha256"], resolution=real_info["resolution"],
                        n=len(real_images), extractor=pr_net)
    pr_ev = FIDEvaluator.from_images(pr_net, real_images, device=acc.device, batch_size=args.batch_size,
                                     cache_key=key, cache_dir=args.stats_cache, accelerator=acc)
    fake = pr_fake.gather(acc)
    return lambda: pr_ev.metrics(fake, want=[m for m in ("pr", "dc") if m in want], k=args.pr_k, dc_k=args.dc_k)


def assemble(args, source, samples, real, extractor, metrics, runtime, extra=None) -> dict:
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *args.argv]),
        "fid_mode": FID_MODE,
        "source": source,
        "samples": samples,
        "real": real,
        "feature_extractor": extractor.describe(),
        "metrics": fill_metrics(metrics, args.metrics),
        "versions": versions(),
        "runtime": runtime,
        **(extra or {}),
    }


def per_class_entry(args, export, extractor, device) -> dict:
    """ACGAN (docs/plan.md, s003): FID of each class's samples against that class's held-out images, and the accuracy of
    an independent attribute classifier on generated images (utils.class_eval.evaluate_acgan)."""
    classes = export.model.num_classes
    n = args.class_samples if args.class_samples is not None else max(args.num_samples // classes, 2)
    if n == 0:
        return {"not_computed": "--class-samples 0"}
    return evaluate_acgan(export, num_per_class=n, extractor=extractor, device=device, seed=args.seed,
                          batch_size=args.batch_size)


# ---------------------------------------------------------------------------------------------
# Translation (CycleGAN, docs/plan.md s001)
# ---------------------------------------------------------------------------------------------

def run_translate(args, acc, export, extractor, out_dir: Path, save_n: int, t_start: float,
                  pr_net=None, dino_net=None) -> dict | None:
    """Translate each domain's held-out images into the other and score them against that domain's held-out images.

    Per direction: FID/KID/precision/recall of the translations, and the same FID for the untranslated inputs (the
    baseline a translator must beat).  Top-level metrics are the mean over the two directions.  The held-out splits
    are re-derived from the export's train_config exactly as train_cyclegan.py made them (never trained on).
    """
    from utils.data import to_float, to_uint8
    from utils.data_sources import DataError
    from utils.images import save_png

    device = acc.device
    model = export.model.eval()
    try:
        domains = load_domains(export.train_config)
    except DataError as e:
        raise MetricsError(f"cannot rebuild the CycleGAN domains from the export's train_config: {e}") from None
    want = [m for m in ("fid", "kid", "pr", "dc") if m in args.metrics]
    directions, runtime = {}, {"device": str(device), "num_processes": acc.num_processes}
    seconds = {"translate": 0.0}
    for name, (a, b) in DIRECTION_DOMAINS.items():
        src, tgt = domains[a].heldout, domains[b].heldout
        if args.n_real is not None:
            tgt = tgt[:args.n_real]
        src = src[:args.num_samples]
        if len(src) < 2 or len(tgt) < 2:
            raise MetricsError(f"{name}: needs ≥ 2 held-out images per domain (has {len(src)} → {len(tgt)})")
        out_sub = out_dir / "samples" / name

        def translate(block, direction=name):
            t0 = time.perf_counter()
            with torch.no_grad():
                y = model.translate(to_float(block.to(device)), direction, batch_size=args.batch_size)
            y = to_uint8(y.clamp(-1, 1)).cpu()
            seconds["translate"] += time.perf_counter() - t0
            return y

        def save_block(start, u8, out_sub=out_sub):
            for i in range(min(len(u8), max(save_n - start, 0))):
                save_png(u8[i].permute(1, 2, 0).numpy(), out_sub / f"{start + i:06d}.png")

        if save_n and acc.is_main_process:
            out_sub.mkdir(parents=True, exist_ok=True)
            for old in out_sub.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
                old.unlink()
        acc.wait_for_everyone()
        pr_fake = BlockFeatures(pr_net, batch_size=args.batch_size, device=device) if pr_net else None
        dino_fake = BlockFeatures(dino_net, batch_size=args.batch_size, device=device) if dino_net else None
        fake_feats, _ = distributed_extract(src, extractor, batch_size=args.batch_size, device=device,
                                            accelerator=acc, transform=translate,
                                            on_block=chain(save_block, pr_fake, dino_fake), desc=f"translate {name}")
        src_feats, _ = distributed_extract(src, extractor, batch_size=args.batch_size, device=device, accelerator=acc,
                                           desc=f"untranslated {name}")
        info = {k: domains[b].info.get(k) for k in ("source", "domain", "attr", "attr_value", "split_sha256")}
        info.update(pixels_sha256=pixels_sha256(tgt), resolution=int(tgt.shape[-1]), split="heldout",
                    heldout_size=len(domains[b].heldout))
        key = reference_key(source=f"{info['source']}:{info['domain']}", split_sha256=info["split_sha256"],
                            pixels_sha256=info["pixels_sha256"], resolution=info["resolution"], n=len(tgt),
                            extractor=extractor)
        ev = FIDEvaluator.from_images(extractor, tgt, device=device, batch_size=args.batch_size, cache_key=key,
                                      cache_dir=args.stats_cache, accelerator=acc, info=info, fd_method=args.fd_method,
                                      desc=f"reference {name}")
        pr_metrics = pr_metrics_fn(args, acc, pr_net, pr_fake, tgt, info, want, cache_source=key["source"])
        dino_metrics = dinov2_metrics_fn(args, acc, dino_net, dino_fake, tgt, info, cache_source=key["source"])
        fid_want = [m for m in want if not (pr_net and m in ("pr", "dc"))]
        if acc.is_main_process:
            directions[name] = {"source_domain": domains[a].info.get("domain"), "target_domain": info["domain"],
                                "n_translated": len(src), "real": {**ev.info, "n": len(tgt)},
                                "metrics": {**ev.metrics(fake_feats, want=fid_want, k=args.pr_k, dc_k=args.dc_k),
                                            **pr_metrics(), **dino_metrics()},
                                "untranslated_baseline": ev.metrics(src_feats, want=["fid"])["fid"] if "fid" in want
                                else not_computed("not requested (--metrics)")}
    if not acc.is_main_process:
        return None

    metrics = {}
    for m in ("fid", "kid", "precision", "recall", "density", "coverage", "fd_dinov2"):
        if m in directions["xy"]["metrics"]:
            vals = [directions[d]["metrics"][m]["value"] for d in DIRECTION_DOMAINS]
            feats = {f: directions["xy"]["metrics"][m].get(f) for f in ("features", "features_name", "features_sha256")}
            entries = [directions[d]["metrics"][m] for d in DIRECTION_DOMAINS]
            if all("num_samples" in e for e in entries):   # the smaller direction's counts (and whether biased)
                feats.update(num_samples=min(e["num_samples"] for e in entries),
                             num_real=min(e["num_real"] for e in entries))
                if all("feature_dim" in e for e in entries):
                    feats.update(feature_dim=entries[0]["feature_dim"], biased=any(e["biased"] for e in entries))
            metrics[m] = ({"value": float(np.mean(vals)), "aggregate": "mean of xy and yx (see translate)",
                           "per_direction": dict(zip(DIRECTION_DOMAINS, vals)), **feats} if None not in vals
                          else not_computed(f"not computed for every direction: {dict(zip(DIRECTION_DOMAINS, vals))}"))
    metrics["inception_score"] = not_computed("translation model: scored by FID per direction, not IS")
    metrics["lpips_diversity"] = not_computed("translation is deterministic (one output per input): no diversity")
    if "params" in args.metrics:
        metrics["params_generator"] = {"value": sum(p.numel() for p in model.parameters()),
                                       "counted_from": "both generators (the export holds no discriminators)"}
        metrics["params_total"] = {"value": sum(p.numel() for p in model.parameters())}
        metrics["train_seconds"] = {"value": float(export.train_seconds), "from": "export metadata"}
    n_total = sum(d["n_translated"] for d in directions.values())
    if "throughput" in args.metrics:
        metrics["sampling_throughput"] = {"value": n_total / max(seconds["translate"], 1e-9), "unit": "translations/s",
                                          "batch_size": args.batch_size, "device": str(device),
                                          "timed_on": "the main process's blocks"}
    runtime.update(translate_seconds=seconds["translate"], wall_seconds=time.perf_counter() - t_start)
    source = {"kind": "export", "path": str(Path(args.ckpt).resolve()), "sha256": file_sha256(args.ckpt),
              "family": export.family, "step": export.step, "epoch": export.epoch, "weights": export.weights}
    samples = {"n": n_total, "seed": None, "block_size": args.batch_size, "mode": "translate",
               "seeding": "deterministic: every held-out image of each domain, in split order",
               "sample_kwargs": {}, "resolution": int(model.resolution), "saved_png": save_n,
               "dir": str(out_dir / "samples") if save_n else None}
    names = [domains[i].info.get("domain") for i in (0, 1)]
    real = {"source": f"{domains[0].info.get('source')} ({names[0]} ↔ {names[1]})", "split": "heldout",
            "split_sha256": hashlib.sha256(" ".join(d["real"]["split_sha256"] for d in directions.values())
                                           .encode()).hexdigest(),
            "per_direction": "see translate.<direction>.real",
            "n": sum(d["real"]["n"] for d in directions.values())}
    extra = {"translate": directions, **({"pr_feature_extractor": pr_net.describe()} if pr_net is not None else {}),
             **({"dinov2_feature_extractor": dino_net.describe()} if dino_net is not None else {})}
    result = assemble(args, source, samples, real, extractor, metrics, runtime, extra)
    write_metrics(out_dir / "metrics.json", result)
    print(translate_summary(result, out_dir))
    refresh_model_card(args, out_dir / "metrics.json")
    return result


def translate_summary(result: dict, out_dir: Path) -> str:
    parts = []
    for d, e in result["translate"].items():
        fid, base = e["metrics"].get("fid", {}).get("value"), e["untranslated_baseline"].get("value")
        parts.append(f"{e['source_domain']}→{e['target_domain']} FID "
                     f"{'n/a' if fid is None else format(fid, '.3f')} (untranslated "
                     f"{'n/a' if base is None else format(base, '.3f')}, {e['n_translated']} images)")
    return " | ".join(parts) + f" [{result['feature_extractor']['name']}] -> {out_dir / 'metrics.json'}"


def summary_line(result: dict, out_dir: Path) -> str:
    m = result["metrics"]

    def fmt(name, spec=".3f"):
        v = m.get(name, {}).get("value")
        return "n/a" if v is None else format(v, spec) + (" (biased: n ≤ d)" if m[name].get("biased") else "")

    return (f"FID {fmt('fid')} | KID {fmt('kid', '.5f')} | P {fmt('precision')} R {fmt('recall')} | "
            f"D {fmt('density')} C {fmt('coverage')} | FD-DINOv2 {fmt('fd_dinov2', '.2f')} | "
            f"IS {fmt('inception_score', '.2f')} | LPIPS-div {fmt('lpips_diversity', '.4f')} | "
            f"{result['samples']['n']} samples vs {result['real']['n']} real "
            f"[{result['feature_extractor']['name']}] -> {out_dir / 'metrics.json'}")


def main(argv: list[str] | None = None) -> dict | None:
    """Entry point; returns the metrics dict on the main process (None on others). Errors exit with one line."""
    from utils.export import ExportError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    done = False
    try:
        result = run(args)
        done = True
        return result
    except (MetricsError, MetricsFileError, ExportError) as e:
        raise SystemExit(f"error: {e}") from None
    except torch.cuda.OutOfMemoryError as e:
        raise SystemExit(oom_message(e, f"lower --batch-size (now {args.batch_size})")) from None
    finally:
        close_process_group(wait=done)


if __name__ == "__main__":
    main()
