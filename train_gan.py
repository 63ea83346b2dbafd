"""Train a face GAN (plan phase 2: DCGAN → WGAN-GP → + spectral norm + attention → 128 px).

    python train_gan.py                                        # DCGAN (plan 2.1) on the built-in synthetic faces
    accelerate launch train_gan.py --loss wgan-gp --sn --attn --data faces/aligned
    accelerate launch train_gan.py --cond-attr Smiling                       # ACGAN (s003) on the synthetic faces

One script for every row of the GAN table; scripts/gan_*.sh hold each row's flags.  Samples, FID and
exports come from the EMA generator.  The flags (``--help``), their per-loss defaults and their checks live in
utils/gan_flags.py; the data, nets, schedules and step in utils/gan_training.py.

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

from dataclasses import asdict

from models.losses import LOSSES
from utils.augment import build_augment
from utils.data import Batches
from utils.diffaug import DiffAugment
from utils.export import save_export
from utils.fid_hook import TrainingFID
from utils.gan_flags import parse_args
from utils.gan_training import (SHOWN_STATS, build_nets, describe_nets, family_of, final_outputs, fixed_latents,
                                gan_step, lr_at, model_config, save_fixed_grid, standing_pass, training_data)
from utils.optim import make_optimizer
from utils.run import config_of, data_on_device, setup_run
from utils.tracking import RunningMeans, plot_curves
from utils.trainer_setup import open_loop, prepare_models


# ------------------------------------------------------------------------------------------------ run name

def run_tag(args) -> str:
    parts = ([args.cond_attr] if args.cond_attr else []) + ([args.arch] if args.arch != "dcgan" else []) + [args.loss]
    parts += ["mod"] if args.arch == "stylegan-lite" and args.style_mode == "modulated" else []
    parts += ["sn"] if args.sn else []
    parts += ["attn"] if args.attn or args.attn_res else []
    return "-".join(parts)


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
