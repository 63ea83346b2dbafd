"""Train a CycleGAN (Zhu et al. 2017) between two unpaired image domains X and Y.

Domains are either two image folders (``--data-x DIR --data-y DIR``) or one source split by a binary
attribute (``--data SOURCE --attr Smiling``: attribute −1 → X, +1 → Y), e.g. not-smiling ↔ smiling on CelebA
(``--attr-file list_attr_celeba.txt``) or on the built-in synthetic faces (which carry their own attributes).

    accelerate launch train_cyclegan.py --attr Smiling --resolution 64
    accelerate launch train_cyclegan.py --data-x apples/ --data-y oranges/ --disc dc

The flags (``--help``) and their checks live in utils/cyclegan_flags.py; the nets, data order and update in
utils/cyclegan_training.py.

Outputs in the run directory: samples/xy_step*.png and yx_step*.png (rows: input | translated | reconstructed,
from fixed held-out images), loss.png, stats.jsonl, checkpoints/ (exact resume) and export.safetensors (EMA
generators; ``python evaluate.py --ckpt runs/<name>/export.safetensors --mode translate``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models.cyclegan import CycleGAN, ImagePool, config_dict
from utils.attributes import load_domains
from utils.augment import build_augment
from utils.cyclegan_flags import parse_args
from utils.cyclegan_training import DomainBatches, PoolCheckpoint, build_nets, cyclegan_update, lr_factor, model_config
from utils.data import FaceData, to_float
from utils.data_sources import DataError
from utils.export import save_export
from utils.images import save_grid
from utils.run import config_of, run_name, setup_run
from utils.tracking import plot_curves
from utils.trainer_setup import open_loop

# Plotted terms; loss_G (the weighted total, ~10x larger, which would flatten the others) stays in stats.jsonl.
CURVE_KEYS = ["adv_xy", "adv_yx", "cycle", "identity", "loss_D_x", "loss_D_y"]


# ---------------------------------------------------------------------------------------------
# Run name: the folder pair or the source
# ---------------------------------------------------------------------------------------------

def default_run_name(args, tag: str) -> str:
    if args.data_x is None:
        return run_name("cyclegan", args, tag)
    pair = f"{Path(args.data_x).resolve().name}2{Path(args.data_y).resolve().name}"
    return run_name("cyclegan", argparse.Namespace(**{**vars(args), "data": pair}), tag)


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------

def fixed_grid_inputs(data: FaceData, k: int, device) -> torch.Tensor:
    """The first k held-out images (training images if the domain has none held out)."""
    pool = data.heldout if len(data.heldout) else data.train
    return to_float(pool[:k].to(device))


@torch.no_grad()
def save_translation_grid(model: CycleGAN, inputs: torch.Tensor, direction: str, path: Path) -> None:
    """Rows: input | translated | translated back (cycle reconstruction)."""
    back = "yx" if direction == "xy" else "xy"
    out = model.translate(inputs, direction)
    save_grid(torch.cat([inputs, out, model.translate(out, back)]), path, nrow=len(inputs))


def plot_losses(run, domains: dict) -> None:
    plot_curves(run.path("stats.jsonl"), run.path("loss.png"), CURVE_KEYS,
                title=f"CycleGAN {domains['x']} ↔ {domains['y']}")


def run_tag(args) -> str:
    tag = f"{args.disc}-{args.gan_loss}" + ("-nocycle" if args.cycle_weight == 0 else "")
    return tag + (f"-{args.attr}" if args.attr else "")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if args.name is None:
        args.name = default_run_name(args, run_tag(args))
    run = setup_run(args, "cyclegan", run_tag(args))
    acc = run.accelerator
    data_x, data_y = load_domains(args)
    for d in (data_x, data_y):
        run.print(f"domain {d.info['domain']}: {d.summary()}")
        if len(d.train) < args.batch_size:
            raise DataError(f"domain {d.info['domain']} has {len(d.train)} training images, fewer than "
                            f"--batch-size {args.batch_size}")

    # ---- build
    cfg = model_config(args)
    nets, ema = build_nets(args, cfg, acc)
    n_params = sum(p.numel() for p in nets.gens.parameters()) / 1e6
    run.print(f"generators G_xy + G_yx: {n_params:.2f}M parameters; discriminators: {args.disc}")

    # ---- data order, pools, resume: the other domain's position and the pools are part of the train state
    batches = DomainBatches(run, data_x, data_y)
    pools = {"x": ImagePool(args.pool_size), "y": ImagePool(args.pool_size)}
    slots = {"ema": ema}
    pool_ckpt = None
    if args.pool_size:
        pool_ckpt = slots["pools"] = PoolCheckpoint(pools, acc.num_processes, args.resolution, run.device)
    loop, log, extra = open_loop(run, batches.lead, slots)
    if extra:
        batches.other.load_state_dict(extra["other_batches"])
        if pool_ckpt is not None:
            pool_ckpt.restore(acc.process_index)

    def save_state():  # collective
        if pool_ckpt is not None:
            pool_ckpt.collect(acc)
        loop.save(other_batches=batches.other.state_dict())

    augment = build_augment(args.aug)
    grid_x = fixed_grid_inputs(data_x, args.grid_size, run.device)
    grid_y = fixed_grid_inputs(data_y, args.grid_size, run.device)
    domains = {"x": data_x.info["domain"], "y": data_y.info["domain"]}
    export_extra = {"domains": domains, "data_x": data_x.info, "data_y": data_y.info}

    def export(path: Path) -> None:
        save_export(path, "cyclegan", ema.module, config_dict(cfg), config_of(args), step=loop.step,
                    epoch=loop.epoch, weights="ema", train_seconds=loop.train_seconds, extra=export_extra)

    run.print(f"training {domains['x']} ↔ {domains['y']} for {loop.total_steps} steps "
              f"({batches.lead.steps_per_epoch} per epoch), from step {loop.step}")

    for lead_batch in loop:
        x, y = batches.pair(lead_batch)
        losses, ok = cyclegan_update(acc, nets, pools, augment(x), augment(y), args,
                                     lr_scale=lr_factor(loop.step, loop.total_steps, args.lr_decay))
        if not loop.tick(ok):
            continue
        ema.update(nets.gens)

        if loop.due("log"):
            log.log(loop.step, {**losses, "lr": nets.opt_G.param_groups[0]["lr"], "epoch": loop.epoch,
                                "img_per_s": loop.recent_images_per_second(args.batch_size)})
            if run.is_main:
                plot_losses(run, domains)
        if loop.due("sample") and run.is_main:
            save_translation_grid(ema.module, grid_x, "xy", run.path("samples", f"xy_step{loop.step:07d}.png"))
            save_translation_grid(ema.module, grid_y, "yx", run.path("samples", f"yx_step{loop.step:07d}.png"))
        if loop.due("export") and run.is_main:
            export(run.path("exports", f"step{loop.step:07d}.safetensors"))
        if loop.due("save"):
            save_state()

    if pool_ckpt is not None and loop.last_saved_step != loop.step:
        pool_ckpt.collect(acc)
    loop.finish(other_batches=batches.other.state_dict())
    if run.is_main:
        export(run.path("export.safetensors"))
        save_translation_grid(ema.module, grid_x, "xy", run.path("samples_xy.png"))
        save_translation_grid(ema.module, grid_y, "yx", run.path("samples_yx.png"))
        plot_losses(run, domains)
        run.print(json.dumps({"run_dir": str(run.dir), "step": loop.step, "epoch": loop.epoch,
                              "train_seconds": round(loop.train_seconds, 1),
                              "export": str(run.path("export.safetensors"))}))
    acc.end_training()


if __name__ == "__main__":
    main()
