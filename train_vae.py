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

Outputs in the run directory: samples/ (prior samples from fixed noise), recon/ (input | reconstruction
on held-out images), interpolation.png, latent_<method>.png, stats.jsonl (train and eval records; an
eval record, written with every sample grid, by default each epoch, holds the held-out reconstruction
MSE and KL), loss.png, kl.png, heldout_mse.png, heldout_kl.png, and export.safetensors (EMA VAE;
``evaluate.py --ckpt`` samples from it).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.losses import LOSSES
from models.patchgan import PATCHGAN_NORMS, min_resolution
from models.perceptual import ENV_WEIGHTS, INITS, NORMALIZE, resolve_weights_path
from models.vae import NORMS, VAE
from utils.argtypes import Every, nonneg_float, positive_float, positive_int
from utils.augment import PRESETS, build_augment
from utils.data import face_data_from_args, to_float
from utils.export import save_export
from utils.fid_hook import TrainingFID
from utils.images import save_grid
from utils.run import add_common_args, config_of, setup_run, train_batches
from utils.tracking import RunningMeans, plot_curves
from utils.trainer_setup import open_loop, prepare_models
from utils.vae_training import (RECON_LOSSES, HeldoutEval, adv_ramp, build_nets, make_optimizers, model_config,
                                vae_update)

DISC_LOSSES = ("hinge", "bce", "lsgan")
ADV_WEIGHTS = ("adaptive", "fixed")
# The synthetic faces have no 'Male'; the renderer marks 'short_hair' as its stand-in (utils/synthetic.py).
SYNTHETIC_STAND_INS = {"Male": "short_hair"}


# ------------------------------------------------------------------------------------------- flags

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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


# ------------------------------------------------------------------------------------------- latent plot

def attribute_names(path: str, fail=None) -> list[str]:
    """Attribute names from line 2 of a CelebA list_attr file."""
    try:
        with open(path) as f:
            f.readline()
            names = f.readline().split()
    except OSError as e:
        (fail or _exit)(f"cannot read attribute file {path}: {e.strerror}")
    if not names:
        (fail or _exit)(f"{path} is not a CelebA attribute file (line 2 should list attribute names)")
    return names


def _exit(msg: str):
    raise SystemExit(f"error: {msg}")


def read_attribute(path: str, attr: str) -> dict[str, bool]:
    """{image file name: attribute is +1} from a CelebA list_attr file (line 1 count, line 2 names, rows
    ``filename v1 v2 …`` with ±1).  Malformed rows are skipped."""
    col = attribute_names(path).index(attr)
    out = {}
    with open(path) as f:
        f.readline(), f.readline()
        for line in f:
            parts = line.split()
            if len(parts) > col + 1 and parts[col + 1] in ("1", "-1"):
                out[Path(parts[0]).name] = parts[col + 1] == "1"
    return out


def match_attribute(table: dict[str, bool], names: list[str]) -> list[tuple[int, bool]]:
    """(position, label) for held-out names found in the table.  Names are relative paths; they match by
    file name, or by stem because align_faces.py writes b.jpg as b.png (and b.jpg as b.jpg.png on a clash)."""
    by_stem = {Path(k).stem: v for k, v in table.items()}
    found = []
    for i, n in enumerate(names):
        base = Path(n).name
        for key, lookup in ((base, table), (Path(base).stem, table), (Path(base).stem, by_stem)):
            if key in lookup:
                found.append((i, lookup[key]))
                break
    return found


def heldout_labels(args, data, say) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(held-out indices with a known label, boolean labels, attribute name), or None with a message."""
    try:
        names = json.loads(Path(data.info["manifest_path"]).read_text())["heldout"]
    except (KeyError, OSError, ValueError):
        say("latent plot skipped: no split manifest with held-out names")
        return None
    if len(names) != len(data.heldout):
        say("latent plot skipped: the split manifest does not match the held-out images")
        return None
    attr = args.attr
    if args.attr_file:
        found = match_attribute(read_attribute(args.attr_file, attr), names)
        say(f"latent plot: {len(found)} of {len(names)} held-out images have a row in {args.attr_file}")
    elif all(n.startswith("synthetic/") for n in names):
        try:
            from utils.synthetic import face_attributes
            from utils.synthetic_params import ATTRIBUTE_NAMES
        except ImportError:
            say("latent plot skipped: utils.synthetic has no face_attributes")
            return None
        if attr not in ATTRIBUTE_NAMES and SYNTHETIC_STAND_INS.get(attr) in ATTRIBUTE_NAMES:
            say(f"latent plot: synthetic faces have no {attr!r}; using its stand-in {SYNTHETIC_STAND_INS[attr]!r}")
            attr = SYNTHETIC_STAND_INS[attr]
        if attr not in ATTRIBUTE_NAMES:
            say(f"latent plot skipped: synthetic faces have no attribute {attr!r} ({', '.join(ATTRIBUTE_NAMES)})")
            return None
        seed, idx = int(names[0].split("/")[1]), [int(n.rsplit("/", 1)[1]) for n in names]
        found = list(enumerate(face_attributes(idx, seed)[attr].astype(bool)))
    else:
        say("latent plot skipped: pass --attr-file list_attr_celeba.txt to colour it")
        return None
    if len(found) < 2:
        say("latent plot skipped: fewer than 2 held-out images have a label")
        return None
    idx, labels = map(np.array, zip(*found))
    return idx, labels.astype(bool), attr


@torch.no_grad()
def latent_plot(model: VAE, data, labels, method: str, max_points: int, seed: int, path: Path) -> None:
    """2-D t-SNE or PCA of held-out posterior means, coloured by a binary attribute (docs/plan.md, s003)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx, lab, attr = labels
    keep = np.random.default_rng(seed).permutation(len(idx))[:max_points]
    idx, lab = idx[keep], lab[keep]
    mus = [model.encode(to_float(data.heldout[torch.as_tensor(c)].to(model.device)))[0].float().cpu()
           for c in np.array_split(idx, max(1, len(idx) // 256))]
    mu = torch.cat(mus).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE
        tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(mu) - 1) / 3), random_state=seed)
        xy = tsne.fit_transform(mu)
    else:  # PCA: projection on the two leading right-singular vectors of the centred means
        centred = mu - mu.mean(0)
        xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    fig, ax = plt.subplots(figsize=(6, 6))
    for value, colour in ((False, "tab:orange"), (True, "tab:blue")):
        m = lab == value
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, c=colour, label=f"{attr} ({m.sum()})" if value
                   else f"not {attr} ({m.sum()})")
    ax.set_title(f"VAE posterior means, {method.upper()} of {len(mu)} held-out images")
    ax.legend(markerscale=3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, "vae", run_tag(args))
    acc = run.accelerator
    data = face_data_from_args(args)
    run.print(data.summary())
    fid = TrainingFID(run, data)
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
