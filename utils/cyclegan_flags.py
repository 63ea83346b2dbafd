"""The flags of train_cyclegan.py: its parser, the domain defaults (--data synthetic split by --attr Smiling unless
--data-x/--data-y) and the checks that reject contradictory flags with one line (exit 2).  ``parse_args(argv)`` is what
``python train_cyclegan.py ARGV`` resolves; the tests call it to get exactly a run's settings.
"""
from __future__ import annotations

import argparse

from models.cyclegan import DISCRIMINATORS, GAN_LOSSES
from utils.argtypes import Every, nonneg_float, positive_float, positive_int
from utils.augment import PRESETS as AUG_PRESETS
from utils.run import add_common_args

DESCRIPTION = 'Train a CycleGAN (Zhu et al. 2017) between two unpaired image domains X and Y.'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("domains")
    g.add_argument("--data-x", type=str, default=None, help="folder of domain-X images (with --data-y)")
    g.add_argument("--data-y", type=str, default=None, help="folder of domain-Y images (with --data-x)")
    g.add_argument("--attr", type=str, default=None,
                   help="split --data by this binary attribute: −1 → X, +1 → Y (None: Smiling, unless --data-x)")
    g.add_argument("--attr-file", type=str, default=None,
                   help="CelebA-format attribute file (list_attr_celeba.txt or .csv); rows matched to images by "
                        "file name. Not needed for synthetic data; for --data celeba defaults to the one in its root")
    g = p.add_argument_group("cyclegan")
    g.add_argument("--disc", type=str, default="patch", choices=list(DISCRIMINATORS),
                   help="PatchGAN (per-patch logits) or DCGAN-style (one global logit) discriminators")
    g.add_argument("--gan-loss", type=str, default="lsgan", choices=list(GAN_LOSSES),
                   help="adversarial loss: least squares (the paper) or binary cross-entropy")
    g.add_argument("--cycle-weight", type=nonneg_float, default=10.0,
                   help="λ of the cycle-consistency L1 term (paper: 10); 0 turns it off")
    g.add_argument("--identity-weight", type=nonneg_float, default=None,
                   help="weight of the identity L1 term (None: 0.5 × --cycle-weight, paper §5.2); 0 = off")
    g.add_argument("--pool-size", type=int, default=50,
                   help="generated-image history for discriminator updates (Shrivastava et al. 2017); 0 = off")
    g.add_argument("--lr", type=positive_float, default=2e-4, help="Adam learning rate (both G and D)")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam β1")
    g.add_argument("--beta2", type=float, default=0.999, help="Adam β2")
    g.add_argument("--lr-decay", type=str, default="linear", choices=["linear", "none"],
                   help="linear: constant for the first half of training, then linearly to 0 (paper)")
    g.add_argument("--gen-width", type=positive_int, default=64, help="generator base channels")
    g.add_argument("--gen-blocks", type=int, default=3, help="generator residual blocks at 1/4 resolution")
    g.add_argument("--disc-width", type=positive_int, default=64, help="discriminator base channels")
    g.add_argument("--aug", type=str, default="flip", choices=list(AUG_PRESETS),
                   help="training augmentation preset (utils/augment.py), applied to both domains")
    g.add_argument("--grid-size", type=positive_int, default=8, help="held-out images per sample grid")
    # FID of a translator needs held-out inputs of one domain against the other: use evaluate.py --mode translate.
    p.set_defaults(data=None, fid_every=Every("0"))
    args = p.parse_args(argv)
    _validate(p, args)
    return args


def _validate(p: argparse.ArgumentParser, args) -> None:
    if (args.data_x is None) != (args.data_y is None):
        p.error("--data-x and --data-y go together")
    if args.data_x is not None:
        if args.data is not None or args.attr is not None or args.attr_file is not None:
            p.error("use either --data-x/--data-y (two folders) or --data/--attr (one source split by an attribute)")
    else:
        args.data = args.data or "synthetic"
        args.attr = args.attr or "Smiling"
        if args.data == "synthetic" and args.attr_file:
            p.error("--attr-file is for image folders and celeba; synthetic faces carry their own attributes")
    if args.combined:
        p.error("--combined is not supported by train_cyclegan.py (each domain is one source)")
    if args.grad_accum != 1:
        p.error("--grad-accum is not supported by train_cyclegan.py (two optimizers per step)")
    if args.fid_every.value != 0:
        p.error("training-time FID is not available for CycleGAN; evaluate the export with "
                "`python evaluate.py --ckpt EXPORT --mode translate` (FID per direction)")
    if args.pool_size < 0 or args.gen_blocks < 0:
        p.error("--pool-size and --gen-blocks must be ≥ 0")
    if args.identity_weight is None:
        args.identity_weight = 0.5 * args.cycle_weight
