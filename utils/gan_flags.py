"""The flags of train_gan.py: its parser, the per-loss and per-option defaults, and the checks that reject
contradictory flags with one line (exit 2).  ``parse_args(argv)`` is what ``python train_gan.py ARGV`` resolves; the
tests and bench/train_throughput.py call it to get exactly a run's settings.
"""
from __future__ import annotations

import argparse

from models.acgan import EMBEDS
from models.gan import ARCHS, D_NORMS, G_NORMS, default_attn_res
from models.layers import UPSAMPLE_MODES
from models.losses import LOSSES
from models.stylegan import STYLE_MODES, STYLE_UPSAMPLE
from utils.argtypes import Every, nonneg_float, nonneg_int, positive_float, positive_int, positive_int_tuple, unit_float
from utils.augment import PRESETS
from utils.diffaug import DiffAugment, DiffAugmentError
from utils.optim import LOSS_DEFAULTS, OPTIMIZERS
from utils.run import add_common_args

LR_SCHEDULES = ("none", "step", "exp", "cosine")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a GAN on face images (plan phase 2).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--arch", type=str, default="dcgan", choices=sorted(ARCHS), help="generator/critic family")
    g.add_argument("--latent-dim", type=positive_int, default=100, help="z dimension (plan: 100 DCGAN, 128 WGAN-GP)")
    g.add_argument("--ngf", type=positive_int, default=64, help="generator width (channels of its last feature map)")
    g.add_argument("--ndf", type=positive_int, default=64, help="critic width (channels of its first feature map)")
    g.add_argument("--g-norm", type=str, default="batch", choices=G_NORMS, help="generator normalisation")
    g.add_argument("--d-norm", type=str, default=None, choices=D_NORMS,
                   help="critic normalisation (default: none with --sn, instance for wgan-gp, else batch)")
    g.add_argument("--upsample", type=str, default=None, choices=UPSAMPLE_MODES,
                   help="generator upsampling: fractionally-strided conv or resize-convolution "
                        "(docs/plan.md, s001/s004); default transposed for dcgan, bilinear for stylegan-lite")
    g.add_argument("--style-mode", type=str, default="adain", choices=STYLE_MODES,
                   help="stylegan-lite style injection: AdaIN (StyleGAN) or weight (de)modulation (StyleGAN2)")
    g.add_argument("--mapping-layers", type=positive_int, default=4, help="stylegan-lite z→w MLP depth")
    g.add_argument("--noise-inputs", action="store_true", help="stylegan-lite per-pixel noise inputs")
    g.add_argument("--sn", action="store_true", help="spectral normalisation on every critic weight (Miyato et al.)")
    g.add_argument("--attn-res", type=positive_int_tuple, default=None,
                   help="feature-map sizes with SAGAN self-attention in G and D, e.g. 16,32 (where they exist at "
                        "--resolution; default none)")
    g.add_argument("--attn", action="store_true",
                   help="shorthand for the default --attn-res: 16 (and 32 at 128 px; models.gan.default_attn_res)")
    g = p.add_argument_group("objective")
    g.add_argument("--loss", type=str, default="bce", choices=list(LOSSES), help="GAN objective")
    g.add_argument("--n-critic", type=positive_int, default=None, help="critic updates per generator update")
    g.add_argument("--n-critic-schedule", type=str, default="constant", choices=["constant", "wgan"],
                   help="'wgan' (docs/plan.md, s004): 20 critic updates for the first 50 G steps and every 500th, "
                        "else --n-critic")
    g.add_argument("--gp-lambda", type=nonneg_float, default=10.0, help="gradient-penalty weight (wgan-gp)")
    g.add_argument("--clip", type=positive_float, default=None, help="weight-clipping bound (wgan-clip; default 0.01)")
    g.add_argument("--label-smoothing", type=unit_float, default=0.0,
                   help="one-sided: real target 1 - s (bce, lsgan)")
    g.add_argument("--diffaug", type=str, default="",
                   help="DiffAugment policy for real and fake, e.g. 'color,translation,cutout' (empty = off)")
    g.add_argument("--aug", type=str, default="flip", choices=PRESETS,
                   help="augmentation of the real images only (utils/augment.py)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", type=str, default=None, choices=OPTIMIZERS,
                   help="for G and D (default per loss: rmsprop for wgan-clip, else adam)")
    g.add_argument("--lr-g", type=positive_float, default=None, help="generator learning rate (default per loss)")
    g.add_argument("--lr-d", type=positive_float, default=None, help="critic learning rate (default per loss; TTUR)")
    g.add_argument("--beta1", type=float, default=None, help="Adam beta1 (default per loss: 0.5 bce/lsgan, else 0)")
    g.add_argument("--beta2", type=float, default=None, help="Adam beta2 (default per loss: 0.999 or 0.9)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum of sgd / nesterov")
    g.add_argument("--lr-schedule", type=str, default="none", choices=LR_SCHEDULES,
                   help="learning-rate schedule of both nets (docs/plan.md, s002): step = x gamma every period, "
                        "exp = continuous x gamma per period, cosine = to --lr-min at the end")
    g.add_argument("--lr-gamma", type=positive_float, default=0.7, help="decay factor per period (step, exp)")
    g.add_argument("--lr-period", type=Every, default=Every("10ep"), help="decay period (step, exp), steps or 'Nep'")
    g.add_argument("--lr-min", type=nonneg_float, default=0.0, help="learning-rate floor of every schedule")
    g.add_argument("--grid-samples", type=positive_int, default=None,
                   help="images in each fixed-noise sample grid (default 64; unconditional runs)")
    g = p.add_argument_group("class conditioning (ACGAN, Odena et al. 2017; docs/plan.md, s003)")
    g.add_argument("--cond-attr", type=str, default=None,
                   help="binary face attribute whose two values are the classes, e.g. Smiling (default: unconditional)")
    g.add_argument("--attr-file", type=str, default=None,
                   help="CelebA-format attribute file (list_attr_celeba.txt or .csv) for image folders; synthetic "
                        "faces carry their own attributes, celeba reads its own file")
    g.add_argument("--embed", type=str, default=None, choices=EMBEDS,
                   help="label input of G: concatenate an embedding to z, or multiply z by it (default concat)")
    g.add_argument("--embed-dim", type=positive_int, default=None, help="label-embedding size for concat (default 16)")
    g.add_argument("--aux-weight", type=nonneg_float, default=None,
                   help="weight of the auxiliary class cross-entropy in both losses (default 1)")
    g.add_argument("--grid-rows", type=positive_int, default=None,
                   help="z rows of the class grids, one column per class (default 8)")
    g.add_argument("--class-eval-samples", type=nonneg_int, default=None,
                   help="after training: generated images per class for per-class FID and the attribute probe's "
                        "accuracy, in class_metrics.json (default 0 = skip; uses --fid-extractor/--fid-weights)")
    args = p.parse_args(argv)
    resolve_defaults(p, args)
    return args


def resolve_defaults(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill per-loss defaults and reject contradictory flags with one line (exit 2)."""
    loss = LOSSES[args.loss]
    for key, value in LOSS_DEFAULTS[args.loss].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.upsample is None:
        args.upsample = "bilinear" if args.arch == "stylegan-lite" else "transposed"
    if args.arch == "stylegan-lite" and args.upsample not in STYLE_UPSAMPLE:
        p.error(f"--arch stylegan-lite upsamples by resizing: use --upsample {' or '.join(STYLE_UPSAMPLE)}")
    if args.arch != "stylegan-lite" and (args.style_mode != "adain" or args.mapping_layers != 4 or args.noise_inputs):
        p.error("--style-mode, --mapping-layers and --noise-inputs apply to --arch stylegan-lite only")
    if args.grad_accum != 1:  # Accelerate would divide each loss by it while every step still updates
        p.error("--grad-accum is not supported by train_gan.py; use a smaller --batch-size or more processes")
    if args.clip is not None and args.loss != "wgan-clip":
        p.error("--clip applies to --loss wgan-clip only")
    if args.d_norm is None:
        args.d_norm = "none" if args.sn else ("instance" if args.loss == "wgan-gp" else "batch")
    if args.loss == "wgan-gp" and args.d_norm == "batch":
        p.error("--loss wgan-gp penalises each sample's gradient, which BatchNorm couples across the batch "
                "(Gulrajani et al. 2017): use --d-norm layer, instance or none")
    if args.label_smoothing > 0 and not loss.smoothing_ok:
        p.error(f"--label-smoothing has no meaning for --loss {args.loss} (bce or lsgan only)")
    if args.label_smoothing >= 1:
        p.error("--label-smoothing must be < 1")
    if args.optimizer == "nesterov" and args.momentum <= 0:
        p.error("--optimizer nesterov needs --momentum > 0")
    if args.lr_schedule in ("step", "exp") and args.lr_period.value == 0:
        p.error("--lr-period must be > 0 for --lr-schedule step/exp")
    try:
        args.diffaug = ",".join(DiffAugment(args.diffaug).policy)
    except DiffAugmentError as e:
        p.error(str(e))
    if args.attn and args.attn_res is not None:
        p.error("--attn is the shorthand for the default --attn-res; pass one of them")
    args.attn_res = (sorted(set(args.attn_res)) if args.attn_res is not None
                     else default_attn_res(args.resolution) if args.attn else [])
    resolve_conditioning(p, args)


# Flags of --cond-attr runs and their defaults (None until resolved, so that setting one without it is an error).
COND_DEFAULTS = {"embed": "concat", "embed_dim": 16, "aux_weight": 1.0, "grid_rows": 8, "class_eval_samples": 0}


def resolve_conditioning(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [k for k in ("attr_file", *COND_DEFAULTS) if getattr(args, k) is not None]
    if not args.cond_attr:
        if given:
            p.error(f"--{given[0].replace('_', '-')} applies with --cond-attr only")
        args.grid_samples = 64 if args.grid_samples is None else args.grid_samples
        return
    for key, value in COND_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.grid_samples is not None:
        p.error("--grid-samples is for unconditional grids; with --cond-attr use --grid-rows (one column per class)")
    if args.combined:
        p.error("--combined is not supported with --cond-attr (the attributes come from one source)")
    if args.data == "synthetic" and args.attr_file:
        p.error("--attr-file is for image folders and celeba; synthetic faces carry their own attributes")
    if args.data == "synthetic":
        from utils.synthetic_params import ATTRIBUTE_NAMES
        if args.cond_attr not in ATTRIBUTE_NAMES:
            p.error(f"synthetic faces have no attribute {args.cond_attr!r}; they have: {', '.join(ATTRIBUTE_NAMES)}")
