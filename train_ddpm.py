"""Train a face diffusion model (plan phase 4: DDPM linear+ε → cosine schedule → v-prediction → wider UNet).

    python train_ddpm.py                                          # plan 4.1 on the built-in synthetic faces
    accelerate launch train_ddpm.py --beta-schedule cosine --prediction-type v_prediction --data faces/aligned

The denoiser is a diffusers ``UNet2DModel`` trained with the simple loss of Ho et al. 2020 (ε target) or the
v target of Salimans & Ho 2022; samples, FID and exports come from the EMA weights through our DDIM loop
(models/ddpm.py).  scripts/ddpm_*.sh hold each plan row's flags; the flags themselves (``--help``) and their
checks live in utils/ddpm_flags.py, the update and learning-rate schedule in utils/ddpm_training.py.
A run directory (runs/<name>/) receives samples/stepNNNNNNN.png + .json (fixed-noise grids and the DDIM settings
that made them), samples.png,
stats.jsonl (loss, and loss per timestep quartile), loss.png, exports/ (periodic snapshots),
export.safetensors (what evaluate.py reads), diffusers/ (loads with ``DDIMPipeline.from_pretrained``) and
checkpoints/ (continue with the same command plus --resume latest).

Training-time FID samples with --fid-sample-steps (default 50) DDIM steps to keep the periodic check cheap;
the reported numbers come from evaluate.py with --sample-steps 100 (the plan's setting).
"""
from __future__ import annotations

import torch

from models.ddpm import DiffusionConfig, DiffusionModel, export_diffusers, train_scheduler
from utils.augment import build_augment
from utils.ddpm_flags import parse_args
from utils.ddpm_training import QuartileLoss, ddpm_update, lr_at, model_config, quartile_keys
from utils import fastpath
from utils.export import atomic_write_json, save_export
from utils.images import save_grid
from utils.run import config_of, train_batches
from utils.tracking import plot_curves
from utils.trainer_setup import open_loop, prepare_models, start_run


# ------------------------------------------------------------------------------------------------ run name

def run_tag(args) -> str:
    pred = {"epsilon": "eps", "v_prediction": "v"}[args.prediction_type]
    return f"{args.beta_schedule}-{pred}-c{args.base_channels}"


# ------------------------------------------------------------------------------------------------ outputs

def save_sample_set(model: DiffusionModel, noise_seed: int, num: int, path) -> None:
    """A fixed-seed grid plus a JSON sidecar with the DDIM settings that produced it."""
    images = model.sample(num, generator=torch.Generator().manual_seed(noise_seed))  # the config's DDIM settings
    save_grid(images, path)
    atomic_write_json(path.with_suffix(".json"), {"noise_seed": noise_seed, "num": num, **model.sampler_settings()})


def write_export(path, model: DiffusionModel, cfg: DiffusionConfig, args, loop, data):
    return save_export(path, "ddpm", model, cfg.to_dict(), config_of(args), step=loop.step, epoch=loop.epoch,
                       weights="ema", train_seconds=loop.train_seconds,
                       extra={"data": data.info, "fid": loop.last_fid, "fid_extractor": args.fid_extractor,
                              "fid_sampler": model.sampler_settings(args.fid_sample_steps, args.eta),
                              "sampler": model.sampler_settings()})


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> None:
    args = parse_args(argv)
    run, data, fid = start_run(args, "ddpm", run_tag(args))
    acc = run.accelerator

    cfg = model_config(args)
    # Same initial weights on every process and for any process count: build under a fixed seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = DiffusionModel(cfg)
    scheduler = train_scheduler(cfg)
    run.print(f"UNet {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, channels {cfg.block_channels} "
              f"at {cfg.level_resolutions}, attention at {cfg.attention_levels or 'none'} + bottleneck; "
              f"{cfg.beta_schedule} schedule, T={cfg.num_train_timesteps}, {cfg.prediction_type} target")
    # fused/foreach kernels (--optimizer-impl) run the same AdamW update; they differ in float rounding only.
    opt = fastpath.make_optimizer(torch.optim.AdamW, model.parameters(), getattr(args, "optimizer_impl", "auto"),
                                  lr=args.lr, betas=(args.beta1, args.beta2), weight_decay=args.weight_decay)
    # Only the UNet is compiled: it is what the training forward runs.
    ema, (model, opt) = prepare_models(acc, args, model, [model, opt], compiled=[model.unet])

    batches = train_batches(run, data.train, args.seed)
    loop, log, extra = open_loop(run, batches, {"ema": ema})
    quartiles = QuartileLoss(cfg.num_train_timesteps, run.device)
    quartiles.load(extra.get("quartiles"))
    augment = build_augment(args.aug)
    grad_norm = torch.zeros((), device=run.device)
    run.print(f"AdamW lr {args.lr:g} (warm-up {args.warmup_steps}), EMA {args.ema_decay}, aug {args.aug}; DDIM "
              f"{args.sample_steps} steps η={args.eta} ({args.timestep_spacing}); {loop.total_steps} steps "
              f"({batches.steps_per_epoch}/epoch) from step {loop.step}")

    def schedule_state() -> dict:
        return {"quartiles": quartiles.state()}

    for x in loop:
        for group in opt.param_groups:
            group["lr"] = lr_at(loop.step, args)
        per_sample, t, norm, ok = ddpm_update(acc, model, scheduler, opt, augment(x), args)
        if norm is not None:
            grad_norm = norm
        if not loop.tick(ok):
            continue
        ema.update(acc.unwrap_model(model))
        quartiles.add(per_sample, t)

        if loop.due("log"):
            stats = quartiles.read_and_reset(acc)
            stats.update(grad_norm=float(grad_norm), lr=opt.param_groups[0]["lr"], epoch=loop.epoch,
                         img_per_s=loop.recent_images_per_second(args.batch_size))
            log.log(loop.step, stats)
            run.print(f"step {loop.step}/{loop.total_steps} ep {loop.epoch} loss {stats['loss']:.4f} | quartiles "
                      + " ".join(f"{stats[k]:.4f}" for k in quartile_keys(cfg.num_train_timesteps)[1:])
                      + f" | {stats['img_per_s']:.1f} img/s")
            if run.is_main:
                plot_curves(run.path("stats.jsonl"), run.path("loss.png"), keys=quartile_keys(cfg.num_train_timesteps),
                            title=f"DDPM loss ({cfg.beta_schedule}, {cfg.prediction_type})", ylabel="MSE")
        if loop.due("sample") and run.is_main:
            save_sample_set(ema.module, args.seed, args.grid_samples, run.path("samples", f"step{loop.step:07d}.png"))
        if loop.due("fid"):
            loop.last_fid = fid(ema.module, loop.step, steps=args.fid_sample_steps, eta=args.eta)
        if loop.due("export") and run.is_main:
            write_export(run.path("exports", f"step{loop.step:07d}.safetensors"), ema.module, cfg, args, loop, data)
        if loop.due("save"):
            loop.save(**schedule_state())
    loop.finish(**schedule_state())

    if run.is_main:
        path = write_export(run.path("export.safetensors"), ema.module, cfg, args, loop, data)
        export_diffusers(ema.module, run.path("diffusers"))
        save_sample_set(ema.module, args.seed, args.grid_samples, run.path("samples.png"))
        plot_curves(run.path("stats.jsonl"), run.path("loss.png"), keys=quartile_keys(cfg.num_train_timesteps),
                    title=f"DDPM loss ({cfg.beta_schedule}, {cfg.prediction_type})", ylabel="MSE")
        fid_text = f", FID {loop.last_fid:.2f} ({args.fid_extractor})" if loop.last_fid is not None else ""
        run.print(f"done: {loop.step} steps ({loop.epoch} epochs) in {loop.train_seconds:.0f} s "
                  f"({loop.images_per_second(args.batch_size):.1f} img/s){fid_text}; "
                  f"samples {run.path('samples.png')}; "
                  f"export {path}; diffusers pipeline {run.path('diffusers')}")
    acc.end_training()


if __name__ == "__main__":
    main()
