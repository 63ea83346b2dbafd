"""Train a face GAN (plan phase 2: DCGAN → WGAN-GP → + spectral norm + attention → 128 px).

    python train_gan.py                                        # DCGAN (plan 2.1) on the built-in synthetic faces
    accelerate launch train_gan.py --loss wgan-gp --sn --attn --data faces/aligned
    accelerate launch train_gan.py --cond-attr Smiling                       # ACGAN (s003) on the synthetic faces

One script for every row of the GAN table; scripts/gan_*.sh hold each row's flags.  Samples, FID and
exports come from the EMA generator.

Class conditioning is an option, as in StudioGAN (one trainer, conditioning by config): ``--cond-attr Smiling``
trains an ACGAN (Odena et al. 2017; docs/plan.md, s003) on the two classes of a binary attribute (0 = −1,
``not_<attr>``; 1 = +1; images without an attribute row are left out): G takes (z, class), the critic gets an
auxiliary class head, and both losses add the class cross-entropy (--aux-weight).  Every other flag applies as
without it.  Such a run writes an 'acgan' export (evaluate.py adds per-class FID and a linear probe's accuracy),
class grids (samples/ and class_grid.png: each row one z, each column one class), samples_<class>.png, and with
--class-eval-samples N class_metrics.json.  A run directory (runs/<name>/) receives samples/stepNNNNNNN.png
(fixed noise), samples.png (final grid), stats.jsonl (losses averaged over each --log-every period),
loss.png (curves), the FID curve, exports/ (periodic snapshots), export.safetensors (what evaluate.py reads)
and checkpoints/ (continue with the same command plus --resume latest).

Steps and epochs count generator updates (steps/epoch = training images // batch size).  Each critic
iteration takes its own batch of real images, so with --n-critic k the critic sees k epochs of data
per epoch.  A step in which any update had non-finite gradients is skipped and not counted.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict

from models.gan import ARCHS, D_NORMS, G_NORMS, default_attn_res
from models.acgan import EMBEDS
from models.layers import UPSAMPLE_MODES
from models.stylegan import STYLE_MODES, STYLE_UPSAMPLE
from models.losses import LOSSES
from utils.argtypes import Every, nonneg_float, nonneg_int, positive_float, positive_int, positive_int_tuple, unit_float
from utils.augment import PRESETS, build_augment
from utils.data import Batches
from utils.diffaug import DiffAugment, DiffAugmentError
from utils.export import save_export
from utils.fid_hook import TrainingFID
from utils.gan_training import (SHOWN_STATS, build_nets, describe_nets, family_of, final_outputs, fixed_latents,
                                gan_step, model_config, save_fixed_grid, standing_pass, training_data)
from utils.optim import LOSS_DEFAULTS, OPTIMIZERS, make_optimizer
from utils.run import add_common_args, config_of, data_on_device, setup_run
from utils.tracking import RunningMeans, plot_curves
from utils.trainer_setup import open_loop, prepare_models

LR_SCHEDULES = ("none", "step", "exp", "cosine")


# ------------------------------------------------------------------------------------------------ flags

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


def run_tag(args) -> str:
    parts = ([args.cond_attr] if args.cond_attr else []) + ([args.arch] if args.arch != "dcgan" else []) + [args.loss]
    parts += ["mod"] if args.arch == "stylegan-lite" and args.style_mode == "modulated" else []
    parts += ["sn"] if args.sn else []
    parts += ["attn"] if args.attn or args.attn_res else []
    return "-".join(parts)


# ------------------------------------------------------------------------------------------------ schedules

def lr_at(base: float, step: int, args, period: int, total: int) -> float:
    """Learning rate at a generator step: a pure function of the step, so resuming needs no scheduler state."""
    if args.lr_schedule == "none":
        return base
    floor = min(args.lr_min, base)
    if args.lr_schedule == "cosine":
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    exponent = step // period if args.lr_schedule == "step" else step / period
    return max(base * args.lr_gamma ** exponent, floor)


# ------------------------------------------------------------------------------------------------ outputs

def write_export(path, ema, cfg, args, loop, data):
    return save_export(path, family_of(args), ema.for_sampling(), asdict(cfg), config_of(args), step=loop.step,
                       epoch=loop.epoch, weights="ema", train_seconds=loop.train_seconds,
                       extra={"data": data.info, "fid": loop.last_fid, "fid_extractor": args.fid_extractor})


def plot_losses(run, loss, args) -> None:
    # The Wasserstein estimate is −d_loss (without the penalty), so only D accuracy needs a curve of its own.
    plot_curves(run.path("stats.jsonl"), run.path("loss.png"),
                keys=["d_loss", "g_loss", "gp", "d_acc", "aux_d", "aux_g"],   # aux_*: ACGAN's class cross-entropy
                title=f"{'ACGAN' if args.cond_attr else 'GAN'} losses ({loss.name})", ylabel="loss / D accuracy")


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, family_of(args), run_tag(args))
    acc = run.accelerator
    data, labelled = training_data(args)   # labelled: the classes of --cond-attr, else None
    run.print(data.summary() + (f"; classes {labelled.counts()}" if labelled else ""))
    fid = TrainingFID(run, data)

    cfg = model_config(args, labelled.class_names if labelled else None)
    G, D = build_nets(args, cfg)
    run.print(describe_nets(G, D, cfg))
    opt_g, opt_d = make_optimizer(args, G.parameters(), args.lr_g), make_optimizer(args, D.parameters(), args.lr_d)
    # BatchNorm generators sample with statistics recomputed for the EMA weights (utils/ema.py), from batches of
    # the per-process training size.  The penalty's double backward cannot be compiled: D stays eager for wgan-gp.
    ema, (G, D, opt_g, opt_d) = prepare_models(
        acc, args, G, [G, D, opt_g, opt_d], compiled=[G] + ([D] if args.loss != "wgan-gp" else []),
        standing=standing_pass(args, cfg, args.batch_size // acc.num_processes, run.device))

    batches = Batches(data.train, args.batch_size, seed=args.seed, rank=acc.process_index, world=acc.num_processes,
                      device=run.device, on_device=data_on_device(args, data.train, run.device),
                      labels=labelled.train_labels if labelled else None)   # with labels, batches are (x, y)
    loop, log, _ = open_loop(run, batches, {"ema": ema})
    running = RunningMeans()
    lr_period = args.lr_period.steps(batches.steps_per_epoch) or 1
    fixed_z, num_classes = fixed_latents(args), getattr(cfg, "num_classes", 0)
    augment, diffaug, loss = build_augment(args.aug), DiffAugment(args.diffaug), LOSSES[args.loss]
    aux = f" + {args.aux_weight:g}·class CE" if num_classes else ""
    run.print(f"loss {loss.name}{aux}, {args.optimizer} lr G {args.lr_g:g} / D {args.lr_d:g}, n_critic {args.n_critic} "
              f"({args.n_critic_schedule}), aug {args.aug}, diffaug {diffaug}; {loop.total_steps} steps "
              f"({batches.steps_per_epoch}/epoch) from step {loop.step}")

    for batch in loop:
        for opt, base in ((opt_g, args.lr_g), (opt_d, args.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr_at(base, loop.step, args, lr_period, loop.total_steps)
        critic_terms, g = gan_step(acc, G, D, opt_g, opt_d, batch, batches, loop.step, loss, args, augment, diffaug,
                                   num_classes)
        if not loop.tick(critic_terms[-1]["ok"] and g["ok"]):
            continue
        ema.update(acc.unwrap_model(G))
        for terms in (*critic_terms, g):   # only steps that were applied enter the logged means
            running.add(terms)

        if loop.due("log"):
            stats = running.read(acc)   # means since the last log step, every critic update included
            stats.update(lr_g=opt_g.param_groups[0]["lr"], lr_d=opt_d.param_groups[0]["lr"], n_critic=len(critic_terms),
                         epoch=loop.epoch, img_per_s=loop.recent_images_per_second(args.batch_size))
            log.log(loop.step, stats)
            shown = " ".join(f"{k} {stats[k]:.4g}" for k in SHOWN_STATS if k in stats)
            run.print(f"step {loop.step}/{loop.total_steps} ep {loop.epoch} {shown} | {stats['img_per_s']:.1f} img/s")
        if loop.due("sample") and run.is_main:   # curves are redrawn with the grids: plotting costs ~0.2 s
            save_fixed_grid(ema.for_sampling(), fixed_z, run.path("samples", f"step{loop.step:07d}.png"))
            plot_losses(run, loss, args)
        if loop.due("fid"):
            loop.last_fid = fid(ema.for_sampling(), loop.step)   # kept in every checkpoint
        if loop.due("export") and run.is_main:
            write_export(run.path("exports", f"step{loop.step:07d}.safetensors"), ema, cfg, args, loop, data)
        if loop.due("save"):
            loop.save()
    loop.finish()

    if run.is_main:
        path = write_export(run.path("export.safetensors"), ema, cfg, args, loop, data)
        outputs = final_outputs(run, args, ema.for_sampling(), fixed_z, path)
        if loop.stopped_early:
            plot_losses(run, loss, args)
        fid_text = f", FID {loop.last_fid:.2f} ({args.fid_extractor})" if loop.last_fid is not None else ""
        run.print(f"done: {loop.step} steps ({loop.epoch} epochs) in {loop.train_seconds:.0f} s "
                  f"({loop.images_per_second(args.batch_size):.1f} img/s){fid_text}; {outputs}; export {path}")
    acc.end_training()


if __name__ == "__main__":
    main()
