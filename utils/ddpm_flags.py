"""The flags of train_ddpm.py: its parser and the checks that reject contradictory flags with one line (exit 2),
the model config included (models/ddpm.py).  ``parse_args(argv)`` is what ``python train_ddpm.py ARGV`` resolves; the
tests and bench/train_throughput.py call it to get exactly a run's settings.
"""
from __future__ import annotations

import argparse

from models.ddpm import BETA_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SPACINGS, DiffusionConfigError
from utils.argtypes import nonneg_float, positive_float, positive_int, positive_int_tuple, unit_float
from utils.augment import PRESETS
from utils.ddpm_training import model_config
from utils.run import add_common_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a DDPM on face images (plan phase 4).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--base-channels", type=positive_int, default=128, help="UNet width at full resolution (plan: 128)")
    g.add_argument("--channel-mult", type=positive_int_tuple, default=None,
                   help="per-level width multipliers, e.g. 1,2,2,2 (default per resolution: models/ddpm.py)")
    g.add_argument("--layers-per-block", type=positive_int, default=2, help="residual blocks per UNet level")
    g.add_argument("--attn-res", type=positive_int_tuple, default=(8, 16),
                   help="feature-map sizes with self-attention, where they exist at --resolution (plan: 8,16)")
    g.add_argument("--attn-head-dim", type=positive_int, default=None,
                   help="channels per attention head (default: one head per layer, as in Ho et al.)")
    g.add_argument("--dropout", type=unit_float, default=0.1, help="UNet dropout (Ho et al. CIFAR-10: 0.1)")
    g = p.add_argument_group("diffusion")
    g.add_argument("--beta-schedule", type=str, default="linear", choices=list(BETA_SCHEDULES),
                   help="noise schedule: linear β (Ho et al.) or cosine ᾱ (Nichol & Dhariwal; squaredcos_cap_v2)")
    g.add_argument("--prediction-type", type=str, default="epsilon", choices=list(PREDICTION_TYPES),
                   help="UNet target: ε, or v = √ᾱ·ε − √(1−ᾱ)·x₀ (Salimans & Ho)")
    g.add_argument("--num-train-timesteps", type=positive_int, default=1000, help="diffusion steps T (plan: 1000)")
    g.add_argument("--clip-sample", action=argparse.BooleanOptionalAction, default=True,
                   help="clamp the predicted x0 to [-1, 1] at each sampling step")
    g = p.add_argument_group("sampling (DDIM, from the EMA weights)")
    g.add_argument("--sample-steps", type=positive_int, default=100,
                   help="DDIM steps for grids, stored in the export as its default (plan: 100)")
    g.add_argument("--fid-sample-steps", type=positive_int, default=50,
                   help="DDIM steps for training-time FID only (cheaper; evaluate.py uses --sample-steps)")
    g.add_argument("--eta", type=unit_float, default=0.0, help="DDIM η: 0 deterministic, 1 DDPM-like")
    g.add_argument("--timestep-spacing", type=str, default="trailing", choices=list(TIMESTEP_SPACINGS),
                   help="DDIM timestep spacing (trailing starts at t = T-1; Lin et al. 2024)")
    g.add_argument("--set-alpha-to-one", action=argparse.BooleanOptionalAction, default=True,
                   help="the last DDIM step goes to ᾱ = 1 (a clean image)")
    g.add_argument("--grid-samples", type=positive_int, default=16, help="images in each fixed-noise sample grid")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=positive_float, default=2e-4, help="AdamW learning rate (plan: 2e-4)")
    g.add_argument("--weight-decay", type=nonneg_float, default=0.01,
                   help="AdamW decoupled weight decay (PyTorch's AdamW default)")
    g.add_argument("--beta1", type=unit_float, default=0.9, help="AdamW β1")
    g.add_argument("--beta2", type=unit_float, default=0.999, help="AdamW β2")
    g.add_argument("--warmup-steps", type=int, default=1000,
                   help="linear learning-rate warm-up (Ho et al. use 5000 at batch 128); 0 = none")
    g.add_argument("--grad-clip", type=nonneg_float, default=1.0, help="gradient-norm clip (Ho et al.: 1); 0 = off")
    g.add_argument("--aug", type=str, default="flip", choices=PRESETS,
                   help="augmentation (plan 1C: horizontal flip only for diffusion)")
    args = p.parse_args(argv)
    if args.grad_accum != 1:
        p.error("train_ddpm.py does not accumulate gradients; raise --batch-size (or add processes) instead")
    if args.warmup_steps < 0:
        p.error("--warmup-steps must be ≥ 0")
    try:
        model_config(args)
    except DiffusionConfigError as e:
        p.error(str(e))
    return args
