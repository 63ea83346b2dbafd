"""Train a convolutional VAE on faces (plan phase 3: 3.1 MSE → 3.2 + VGG perceptual → 3.3 + PatchGAN).

    accelerate launch train_vae.py --data synthetic                                    # row 3.1
    accelerate launch train_vae.py --lambda-perc 0.1 --vgg-weights vgg16.safetensors  # row 3.2
    scripts/vae_3.3_patchgan.sh                                                        # row 3.3

Objective, per batch:  L = L_rec + λ_perc·L_vgg + λ_adv·L_adv + β·KL / D

* L_rec: per-pixel mean squared (``--recon mse``) or absolute (``l1``) error, images in [-1, 1].
* KL: KL(q(z|x) ‖ N(0, I)) summed over latent dims, averaged over the batch (nats per sample; this is
  what is logged).  D = 3·H·W.
* Why KL/D: with the reconstruction term a per-pixel mean, dividing the per-sample KL by the number of
  pixel values makes the sum (SSE + β·KL)/D.  For β = 1 that is exactly the negative ELBO of a Gaussian
  decoder with σ² = ½ (MSE) or a Laplace decoder with b = 1 (L1), up to a constant, divided by D
  (Kingma & Welling 2014, eq. 3; the normalised β of Higgins et al. 2017, §4).  So the plan's β = 1 is
  the plain VAE, and λ_perc, λ_adv keep their VQGAN-style meaning relative to a per-pixel loss.
* L_vgg: models/perceptual.py (VGG-16 relu1_2/relu2_2/relu3_3).  L_adv: generator loss of a PatchGAN
  (models/patchgan.py) trained with its own Adam, off before ``--disc-start`` (Esser et al. 2021, VQGAN).
* λ_adv (``--adv-weight adaptive``, the default): VQGAN's adaptive weight (Esser et al. 2021, eq. 7;
  taming-transformers ``calculate_adaptive_weight``), λ_adv·‖∇_w (L_rec + λ_perc·L_vgg)‖ / (‖∇_w L_adv‖ + 1e-4)
  clamped to [0, 1e4] and detached, w the decoder's last conv weight: the adversarial gradient at the output
  never outgrows λ_adv times the reconstruction gradient.  With ``fixed`` (plain λ_adv) a confident BatchNorm
  PatchGAN took over at 32² aligned CelebA (λ_perc 0): held-out MSE 0.033 → 0.19 within 25 steps of
  ``--disc-start``, 0.30 after 200 (KL ×11); adaptive: 0.033 → 0.027.
  ``--adv-ramp N`` multiplies it by min(1, (step − disc_start)/N), a pure function of the step.  Logged as
  ``adv_w``: the weight actually multiplying L_adv.  ``--disc-sn`` spectral-normalises the discriminator.

The flags (``--help``) and their checks live in utils/vae_flags.py; the nets and the update in
utils/vae_training.py; the latent plot in utils/vae_latent_plot.py.

Outputs in the run directory: samples/ (prior samples from fixed noise), recon/ (input | reconstruction
on held-out images), interpolation.png, latent_<method>.png, stats.jsonl (train and eval records; an
eval record, written with every sample grid, by default each epoch, holds the held-out reconstruction
MSE and KL), loss.png, kl.png, heldout_mse.png, heldout_kl.png, and export.safetensors (EMA VAE;
``evaluate.py --ckpt`` samples from it).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from models.losses import LOSSES
from models.vae import VAE
from utils.augment import build_augment
from utils.data import to_float
from utils.export import save_export
from utils.images import save_grid
from utils.run import config_of, train_batches
from utils.tracking import RunningMeans, plot_curves
from utils.trainer_setup import open_loop, prepare_models, start_run
from utils.vae_flags import parse_args
from utils.vae_latent_plot import heldout_labels, latent_plot
from utils.vae_training import HeldoutEval, adv_ramp, build_nets, make_optimizers, model_config, vae_update


# ------------------------------------------------------------------------------------------- run name

def run_tag(args) -> str:
    tag = args.recon + ("-perc" if args.lambda_perc > 0 else "") + ("-patchgan" if args.lambda_adv > 0 else "")
    return f"{tag}-b{args.beta:g}"


# ------------------------------------------------------------------------------------------- evaluation

def reconstruction_grid(model: VAE, images: torch.Tensor, path: Path) -> None:
    """Pairs (input | reconstruction), four pairs per row."""
    with torch.no_grad():
        x = to_float(images.to(model.device))
        pairs = torch.stack([x, model.reconstruct(x).float().clamp(-1, 1)], dim=1).flatten(0, 1)
    save_grid(pairs, path, nrow=8)


def interpolation_grid(model: VAE, images: torch.Tensor, path: Path, steps: int = 8) -> None:
    """Each row: input A, decode((1−t)μ_A + tμ_B) for t = 0…1, input B."""
    x = to_float(images.to(model.device))
    a, b = x[0::2], x[1::2]
    n = min(len(a), len(b))
    frames = model.interpolate(a[:n], b[:n], steps)
    rows = torch.cat([a[:n, None], frames, b[:n, None]], dim=1)
    save_grid(rows.flatten(0, 1), path, nrow=steps + 2)


# ------------------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    args = parse_args(argv)
    run, data, fid = start_run(args, "vae", run_tag(args))
    acc = run.accelerator
    labels = heldout_labels(args, data, run.print) if args.latent_plot != "none" else None

    cfg = model_config(args)
    vae, disc, perceptual = build_nets(args, cfg, run.device, acc)
    if perceptual is not None:
        run.print(f"perceptual loss: VGG-16 from {perceptual.source}")
    run.print(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, levels "
              f"{cfg.level_channels()}, latent {cfg.latent_dim}")
    opt, opt_d = make_optimizers(args, vae, disc)
    # BatchNorm statistics recomputed for the EMA weights before each use (utils/ema.py), on training images.
    local_batch = args.batch_size // acc.num_processes
    ema, (vae, opt, disc, opt_d) = prepare_models(
        acc, args, vae, [vae, opt, disc, opt_d], layout=[perceptual], standing=lambda m: m(
            to_float(data.train[torch.randint(len(data.train), (local_batch,))].to(run.device))))
    gan = LOSSES[args.disc_loss]

    batches = train_batches(run, data.train, args.seed)
    loop, log, _ = open_loop(run, batches, {"ema": ema})
    augment = build_augment(args.aug)
    disc_start = args.disc_start.steps(batches.steps_per_epoch)
    ramp_steps = args.adv_ramp.steps(batches.steps_per_epoch)
    eval_images = data.heldout[:args.eval_images] if args.eval_images > 0 else data.heldout
    heldout = HeldoutEval(run, log, ema, eval_images, args.batch_size)
    show = data.heldout[:16]
    fixed_z = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    running = RunningMeans()

    def export(path: Path, metrics: dict | None = None) -> None:
        save_export(path, "vae", ema.for_sampling(), asdict(cfg), config_of(args), step=loop.step, epoch=loop.epoch,
                    weights="ema", train_seconds=loop.train_seconds,
                    extra={"heldout": metrics or {}, "data": data.info, "vgg": getattr(perceptual, "source", None),
                           "fid": loop.last_fid, "fid_extractor": args.fid_extractor})

    if run.is_main and loop.step == 0:
        heldout(loop)
    run.print(f"training {loop.total_steps} steps ({batches.steps_per_epoch}/epoch), discriminator "
              f"{'from step ' + str(disc_start) if disc is not None else 'off'}"
              + (f", {args.adv_weight} adversarial weight" if disc is not None else "")
              + (f" ramped over {ramp_steps} steps" if disc is not None and ramp_steps else ""))
    for x in loop:
        x = augment(x)
        adv_on = disc is not None and loop.step >= disc_start
        terms, ok = vae_update(acc, vae, opt, disc if adv_on else None, opt_d, gan, perceptual, x, args,
                               adv_scale=adv_ramp(loop.step, disc_start, ramp_steps))
        if not loop.tick(ok):
            continue
        ema.update(acc.unwrap_model(vae))
        running.add(terms)

        if loop.due("log"):
            values = running.read(acc)
            log.log(loop.step, {**values, "epoch": loop.epoch, "img_per_s": loop.recent_images_per_second(args.batch_size)})
            run.print(f"step {loop.step} ep {loop.epoch} " + " ".join(f"{k} {v:.4g}" for k, v in values.items()))
            if run.is_main:
                plot_all(run)
        if loop.due("sample") and run.is_main:
            sampler = ema.for_sampling()
            save_grid(sampler.sample(len(fixed_z), z=fixed_z), run.path("samples", f"step{loop.step:07d}.png"))
            reconstruction_grid(sampler, show, run.path("recon", f"step{loop.step:07d}.png"))
            heldout(loop)
        if loop.due("fid"):
            loop.last_fid = fid(ema.for_sampling(), loop.step)
        if loop.due("export") and run.is_main:
            export(run.path("exports", f"step{loop.step:07d}.safetensors"), heldout.at(loop.step))
        if loop.due("save"):
            loop.save()
    loop.finish()

    if run.is_main:
        metrics = heldout(loop, "final")
        export(run.path("export.safetensors"), metrics)
        save_grid(ema.for_sampling().sample(len(fixed_z), z=fixed_z), run.path("samples.png"))
        reconstruction_grid(ema.for_sampling(), show, run.path("reconstructions.png"))
        interpolation_grid(ema.for_sampling(), data.heldout[:8], run.path("interpolation.png"))
        if labels is not None:
            latent_plot(ema.for_sampling(), data, labels, args.latent_plot, args.latent_points, args.seed,
                        run.path(f"latent_{args.latent_plot}.png"))
        plot_all(run)
        run.print(f"done: {loop.step} steps in {loop.train_seconds / 60:.1f} min; held-out MSE {metrics['mse']:.5f} "
                  f"({metrics['mse_255']:.1f} in 0-255 units), KL {metrics['kl']:.2f} nats; "
                  f"export {run.path('export.safetensors')}")
    acc.wait_for_everyone()
    acc.end_training()


def plot_all(run) -> None:
    stats = run.path("stats.jsonl")
    plot_curves(stats, run.path("loss.png"), ["loss", "rec", "perc", "adv", "d_loss"], title="VAE training losses")
    plot_curves(stats, run.path("kl.png"), ["kl"], title="KL per sample (train)", ylabel="nats")
    plot_curves(stats, run.path("heldout_mse.png"), ["mse"], kind="eval",
                title="held-out reconstruction MSE (per pixel, [-1, 1])", ylabel="MSE")
    plot_curves(stats, run.path("heldout_kl.png"), ["kl"], kind="eval", title="held-out KL per sample",
                ylabel="nats")


if __name__ == "__main__":
    main()
