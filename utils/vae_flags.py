"""The flags of train_vae.py: its parser and the checks that reject contradictory flags with one line (exit 2); with
--lambda-perc and ImageNet VGG weights it records the weights file actually used.  ``parse_args(argv)`` is what
``python train_vae.py ARGV`` resolves; the tests and bench/train_throughput.py call it to get exactly a run's settings.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from models.patchgan import PATCHGAN_NORMS, min_resolution
from models.perceptual import ENV_WEIGHTS, INITS, NORMALIZE, resolve_weights_path
from models.vae import NORMS
from utils.argtypes import Every, nonneg_float, positive_float, positive_int
from utils.augment import PRESETS
from utils.run import add_common_args
from utils.vae_latent_plot import attribute_names
from utils.vae_training import RECON_LOSSES

DESCRIPTION = 'Train a convolutional VAE on faces (plan phase 3: 3.1 MSE → 3.2 + VGG perceptual → 3.3 + PatchGAN).'
DISC_LOSSES = ("hinge", "bce", "lsgan")
ADV_WEIGHTS = ("adaptive", "fixed")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=positive_int, default=256, help="latent size (plan 3.1: 256)")
    g.add_argument("--base-channels", type=positive_int, default=64, help="first encoder level's channels")
    g.add_argument("--max-channels", type=positive_int, default=512, help="cap on the per-level doubling")
    g.add_argument("--norm", type=str, default="batch", choices=NORMS, help="normalisation in encoder/decoder")
    g = p.add_argument_group("objective  L = L_rec + λ_perc·L_vgg + λ_adv·L_adv + β·KL/D")
    g.add_argument("--recon", type=str, default="mse", choices=sorted(RECON_LOSSES), help="reconstruction loss")
    g.add_argument("--beta", type=nonneg_float, default=1.0,
                   help="KL weight β (1 = the plain ELBO under this normalisation; plan 3.3: 1e-4)")
    g.add_argument("--lambda-perc", type=nonneg_float, default=0.0, help="VGG perceptual weight (plan 3.2/3.3: 0.1)")
    g.add_argument("--lambda-adv", type=nonneg_float, default=0.0, help="PatchGAN adversarial weight (plan 3.3: 0.1)")
    g.add_argument("--adv-weight", type=str, default="adaptive", choices=ADV_WEIGHTS,
                   help="'adaptive': λ_adv times VQGAN's ‖∇L_rec‖/(‖∇L_adv‖+1e-4) at the decoder's last conv "
                        "(Esser et al. 2021, eq. 7); 'fixed': λ_adv alone (collapsed row 3.3 at 32² CelebA)")
    g.add_argument("--adv-ramp", type=Every, default=Every("0"),
                   help="steps (or epochs, e.g. '2ep') over which the adversarial weight rises linearly from 0 to "
                        "full once the discriminator starts; 0 = full at once")
    g.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate of the VAE (plan: 1e-3)")
    g.add_argument("--adam-beta1", type=float, default=0.9, help="Adam β1 of the VAE")
    g.add_argument("--adam-beta2", type=float, default=0.999, help="Adam β2 of the VAE")
    g.add_argument("--aug", type=str, default="flip", choices=PRESETS,
                   help="augmentation preset (plan 1C: flip only for the VAE)")
    g = p.add_argument_group("perceptual loss (VGG-16)")
    g.add_argument("--vgg-weights", type=str, default=None,
                   help=f"local torchvision-named VGG-16 state dict (.safetensors/.pth); default ${ENV_WEIGHTS}, "
                        "else torchvision's ImageNet download")
    g.add_argument("--vgg-init", type=str, default="imagenet", choices=INITS,
                   help="'random' is for tests only (recorded in the run config)")
    g.add_argument("--perc-norm", type=str, default="unit", choices=NORMALIZE,
                   help="'unit': LPIPS-style channel-normalised features; 'none': raw feature MSE")
    g = p.add_argument_group("PatchGAN discriminator")
    g.add_argument("--disc-loss", type=str, default="hinge", choices=DISC_LOSSES, help="GAN objective")
    g.add_argument("--disc-start", type=Every, default=Every("0"),
                   help="step (or epochs, e.g. '10ep') before which the discriminator is off")
    g.add_argument("--disc-lr", type=positive_float, default=2e-4, help="discriminator Adam learning rate")
    g.add_argument("--disc-ndf", type=positive_int, default=64, help="discriminator base width")
    g.add_argument("--disc-layers", type=positive_int, default=3,
                   help="stride-2 layers (3 → 70×70 patches; needs ≥ 24 px inputs)")
    g.add_argument("--disc-norm", type=str, default="batch", choices=PATCHGAN_NORMS,
                   help="discriminator norm (pix2pix/VQGAN: batch; with --disc-sn usually none)")
    g.add_argument("--disc-sn", action="store_true",
                   help="spectral norm on every discriminator conv (Miyato et al. 2018): a Lipschitz bound on how "
                        "hard D can push the decoder.  Note: at init the BatchNorm PatchGAN's gradient w.r.t. its "
                        "input is ~70x that of the same net without BN (32², ndf 64), so pair it with --disc-norm none")
    g = p.add_argument_group("evaluation outputs")
    g.add_argument("--eval-images", type=int, default=0,
                   help="held-out images for the reconstruction MSE / KL computed with each sample grid (0 = all)")
    g.add_argument("--latent-plot", type=str, default="tsne", choices=["tsne", "pca", "none"],
                   help="2-D embedding of held-out posterior means, drawn at the end (docs/plan.md, s003)")
    g.add_argument("--latent-points", type=positive_int, default=2000, help="held-out images in the latent plot")
    g.add_argument("--attr-file", type=str, default=None,
                   help="CelebA-style list_attr_celeba.txt colouring the latent plot (synthetic data: built in)")
    g.add_argument("--attr", type=str, default="Male", help="attribute that colours the latent plot")
    args = p.parse_args(argv)
    validate_args(p, args)
    return args


def validate_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.eval_images < 0:
        p.error(f"--eval-images must be ≥ 0 (0 = all held-out images), got {args.eval_images}")
    if args.grad_accum != 1:
        p.error("train_vae.py does not support --grad-accum; lower --batch-size per process instead")
    adv_only = [f for f, on in (("--adv-ramp", args.adv_ramp.value > 0), ("--disc-sn", args.disc_sn)) if on]
    if adv_only and args.lambda_adv == 0:
        verb = "needs" if len(adv_only) == 1 else "need"
        p.error(f"{' and '.join(adv_only)} {verb} a discriminator: pass --lambda-adv > 0")
    if args.lambda_adv > 0 and args.resolution < min_resolution(args.disc_layers):
        p.error(f"--disc-layers {args.disc_layers} needs --resolution ≥ {min_resolution(args.disc_layers)}; "
                f"use fewer layers at {args.resolution} px")
    if args.lambda_perc > 0 and args.vgg_init == "imagenet":
        # Record the file actually used (flag, else environment) in the run config.
        args.vgg_weights = resolve_weights_path(args.vgg_weights)
        if args.vgg_weights and not Path(args.vgg_weights).is_file():
            p.error(f"VGG weights file not found: {args.vgg_weights}")
    if args.attr_file:
        names = attribute_names(args.attr_file, p.error)
        if args.attr not in names:
            p.error(f"attribute {args.attr!r} is not in {args.attr_file} (has e.g. {', '.join(names[:5])})")
