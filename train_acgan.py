"""Train an ACGAN (Odena et al. 2017): faces conditioned on a binary CelebA attribute (docs/plan.md, s003).

    accelerate launch train_acgan.py --attr Smiling                                    # built-in synthetic faces
    accelerate launch train_acgan.py --data faces/ --attr-file list_attr_celeba.txt --attr Male --loss hinge

Classes: 0 = attribute −1 (``not_<attr>``), 1 = attribute +1.  Images without an attribute row are left out
(counted).  The discriminator has a real/fake head (any --loss of train_gan.py) and an auxiliary class head;
both nets also minimise the class cross-entropy — D on real and generated images, G on its generated images
(Odena et al. §3).  Outputs as train_gan.py, plus class grids: samples/stepNNNNNNN.png and class_grid.png
(each row one z, each column one class: rows differ only in the class) and samples_<class>.png.
``--class-eval-samples N`` (per class) writes class_metrics.json with per-class FID against the held-out real
images of that class and the accuracy of an independent attribute classifier on the generated images
(``utils.class_eval.evaluate_acgan``; evaluate.py calls it for any 'acgan' export).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict

import torch
import torch.nn.functional as F

from models.acgan import EMBEDS, ACGANConfig, ACGANDiscriminator, ACGANGenerator
from models.gan import D_NORMS, G_NORMS
from models.layers import UPSAMPLE_MODES
from models.losses import LOSSES
from utils.argtypes import nonneg_float, positive_float, positive_int
from utils.attributes import load_labelled_data
from utils.augment import PRESETS, build_augment
from utils.checkpoint import Checkpointer, step_if_finite
from utils.class_eval import evaluate_acgan
from utils.data import Batches
from utils import fastpath
from utils.ema import EMA
from utils.export import atomic_write_json, save_export
from utils.fid_hook import TrainingFID
from utils.gan_training import critic_step
from utils.images import save_grid
from utils.loop import Loop
from utils.optim import LOSS_DEFAULTS, OPTIMIZERS, make_optimizer
from utils.run import add_common_args, config_of, data_on_device, fid_weights_of, setup_run
from utils.tracking import RunningMeans, StatsLog, plot_curves


# ------------------------------------------------------------------------------------------------ flags

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train an ACGAN conditioned on a face attribute (Odena et al. 2017).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("classes")
    g.add_argument("--attr", type=str, default="Smiling", help="binary attribute that defines the two classes")
    g.add_argument("--attr-file", type=str, default=None,
                   help="CelebA-format attribute file (list_attr_celeba.txt or .csv) for image folders; "
                        "synthetic faces carry their own attributes")
    g = p.add_argument_group("model")
    g.add_argument("--embed", type=str, default="concat", choices=EMBEDS,
                   help="label conditioning of G: concatenate an embedding to z, or multiply z by it")
    g.add_argument("--embed-dim", type=positive_int, default=16, help="label-embedding size (concat)")
    g.add_argument("--latent-dim", type=positive_int, default=100, help="z dimension")
    g.add_argument("--ngf", type=positive_int, default=64, help="generator width")
    g.add_argument("--ndf", type=positive_int, default=64, help="discriminator width")
    g.add_argument("--g-norm", type=str, default="batch", choices=G_NORMS, help="generator normalisation")
    g.add_argument("--d-norm", type=str, default=None, choices=D_NORMS,
                   help="discriminator normalisation (default: none with --sn, instance for wgan-gp, else batch)")
    g.add_argument("--upsample", type=str, default="transposed", choices=UPSAMPLE_MODES, help="generator upsampling")
    g.add_argument("--sn", action="store_true", help="spectral normalisation on every discriminator weight")
    g = p.add_argument_group("objective")
    g.add_argument("--loss", type=str, default="bce", choices=list(LOSSES), help="adversarial objective")
    g.add_argument("--aux-weight", type=nonneg_float, default=1.0, help="weight of the auxiliary class cross-entropy")
    g.add_argument("--n-critic", type=positive_int, default=None, help="D updates per G update (default per loss)")
    g.add_argument("--gp-lambda", type=nonneg_float, default=10.0, help="gradient-penalty weight (wgan-gp)")
    g.add_argument("--clip", type=positive_float, default=None, help="weight-clipping bound (wgan-clip; default 0.01)")
    g.add_argument("--aug", type=str, default="flip", choices=PRESETS, help="augmentation of the real images")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", type=str, default=None, choices=OPTIMIZERS, help="for G and D (default per loss)")
    g.add_argument("--lr-g", type=positive_float, default=None, help="generator learning rate (default per loss)")
    g.add_argument("--lr-d", type=positive_float, default=None, help="discriminator learning rate (default per loss)")
    g.add_argument("--beta1", type=float, default=None, help="Adam beta1 (default per loss)")
    g.add_argument("--beta2", type=float, default=None, help="Adam beta2 (default per loss)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum of sgd / nesterov")
    g = p.add_argument_group("outputs")
    g.add_argument("--grid-rows", type=positive_int, default=8, help="z rows in the class grid")
    g.add_argument("--class-eval-samples", type=int, default=0,
                   help="after training: generated images per class for per-class FID and classifier accuracy "
                        "(0 = skip; uses --fid-extractor/--fid-weights)")
    args = p.parse_args(argv)
    validate(p, args)
    return args


def validate(p: argparse.ArgumentParser, args) -> None:
    for key, value in LOSS_DEFAULTS[args.loss].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.d_norm is None:
        args.d_norm = "none" if args.sn else ("instance" if args.loss == "wgan-gp" else "batch")
    if args.loss == "wgan-gp" and args.d_norm == "batch":
        p.error("--loss wgan-gp needs a per-sample critic: use --d-norm layer, instance or none")
    if args.clip is not None and args.loss != "wgan-clip":
        p.error("--clip applies to --loss wgan-clip only")
    if args.grad_accum != 1:
        p.error("--grad-accum is not supported by train_acgan.py")
    if args.combined:
        p.error("--combined is not supported by train_acgan.py (attributes come from one source)")
    if args.data == "synthetic" and args.attr_file:
        p.error("--attr-file is for image folders and celeba; synthetic faces carry their own attributes")
    if args.class_eval_samples < 0:
        p.error("--class-eval-samples must be ≥ 0")


# ------------------------------------------------------------------------------------------------ data

class LabelledBatches(Batches):
    """Batches that also remember the labels of the batch they last returned (same order, same resume state)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, **kw):
        super().__init__(images, batch_size, **kw)
        self.labels = labels.to(self.images.device)
        self.last_labels = None

    def next_uint8(self) -> torch.Tensor:
        if self.index >= self.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        start = self.index * self.batch_size + self.rank * self.local_batch
        idx = self._permutation()[start:start + self.local_batch]
        self.index += 1
        self.last_labels = self.labels[idx].to(self.device, non_blocking=True)
        return self.images[idx].to(self.device, non_blocking=True)


# ------------------------------------------------------------------------------------------------ the step

def d_update(acc, G, D, opt_d, real, labels, num_classes, loss, args) -> dict:
    n = real.shape[0]
    z = torch.randn(n, args.latent_dim, device=real.device)
    fake_labels = torch.randint(0, num_classes, (n,), device=real.device)
    with torch.no_grad():
        fake = G(z, fake_labels)
    (s_real, c_real), (s_fake, c_fake) = D(real), D(fake)   # separate passes (BatchNorm)
    adv = loss.d_loss(s_real, s_fake, 0.0)
    aux = 0.5 * (F.cross_entropy(c_real.float(), labels) + F.cross_entropy(c_fake.float(), fake_labels))
    d_loss = adv + args.aux_weight * aux
    out = {"d_loss": adv.detach(), "aux_d": aux.detach(),
           "cls_acc_real": (c_real.argmax(1) == labels).float().mean().detach()}
    return critic_step(acc, D, opt_d, d_loss, out, real, fake, s_real, s_fake, loss, args,
                       score=lambda x: D(x, fp32=True)[0])


def g_update(acc, G, D, opt_g, n, num_classes, loss, args) -> dict:
    z = torch.randn(n, args.latent_dim, device=acc.device)
    labels = torch.randint(0, num_classes, (n,), device=acc.device)
    score, logits = D(G(z, labels))
    aux = F.cross_entropy(logits.float(), labels)
    g_loss = loss.g_loss(score) + args.aux_weight * aux
    opt_g.zero_grad(set_to_none=True)
    acc.backward(g_loss)
    return {"g_loss": g_loss.detach(), "aux_g": aux.detach(),
            "cls_acc_fake": (logits.argmax(1) == labels).float().mean().detach(), "ok": step_if_finite(acc, opt_g, G)}


# ------------------------------------------------------------------------------------------------ outputs

def class_grid(model: ACGANGenerator, z: torch.Tensor) -> torch.Tensor:
    """Row i = z[i] rendered as every class (rows share z; columns differ only in the label)."""
    c = model.num_classes
    labels = torch.arange(c).repeat(len(z))
    return model.sample(len(z) * c, z=z.repeat_interleave(c, 0), labels=labels)


def save_class_outputs(model, z, run, class_names) -> None:
    save_grid(class_grid(model, z), run.path("class_grid.png"), nrow=model.num_classes)
    for c, name in enumerate(class_names):
        labels = torch.full((len(z),), c, dtype=torch.long)
        save_grid(model.sample(len(z), z=z, labels=labels), run.path(f"samples_{name}.png"))


# ------------------------------------------------------------------------------------------------ main

def model_config(args, class_names) -> ACGANConfig:
    return ACGANConfig(resolution=args.resolution, latent_dim=args.latent_dim, num_classes=len(class_names),
                       class_names=list(class_names), attr=args.attr, embed=args.embed, embed_dim=args.embed_dim,
                       ngf=args.ngf, ndf=args.ndf, g_norm=args.g_norm, d_norm=args.d_norm, upsample=args.upsample,
                       spectral_norm=args.sn).validate()


def run_tag(args) -> str:
    return "-".join([args.attr, args.loss] + (["sn"] if args.sn else []))


def main(argv=None) -> None:
    args = parse_args(argv)
    run = setup_run(args, "acgan", run_tag(args))
    acc = run.accelerator
    lab = load_labelled_data(args)
    data = lab.data
    run.print(data.summary() + f"; classes {lab.counts()}")
    fid = TrainingFID(run, data)

    cfg = model_config(args, lab.class_names)
    with torch.random.fork_rng(devices=[]):   # same initial weights for any process count
        torch.manual_seed(args.seed)
        G, D = ACGANGenerator(cfg), ACGANDiscriminator(cfg)
    run.print(f"generator {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M params, "
              f"discriminator {sum(p.numel() for p in D.parameters()) / 1e6:.2f}M params")
    opt_g, opt_d = make_optimizer(args, G.parameters(), args.lr_g), make_optimizer(args, D.parameters(), args.lr_d)
    # BatchNorm statistics recomputed for the EMA weights before each use (utils/ema.py), classes drawn uniformly.
    local_batch, num_classes = args.batch_size // acc.num_processes, len(lab.class_names)
    ema = EMA(G, args.ema_decay, standing=lambda g: g(torch.randn(local_batch, args.latent_dim, device=run.device),
                                                      torch.randint(num_classes, (local_batch,), device=run.device)))
    ema.to(run.device)
    if args.channels_last:  # after the EMA copy: the exported generator stays NCHW
        fastpath.channels_last_(G), fastpath.channels_last_(D)
    fastpath.compile_(G, args.compile)
    fastpath.compile_(D, args.compile and args.loss != "wgan-gp")  # the penalty's double backward cannot be compiled
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)

    batches = LabelledBatches(data.train, lab.train_labels, args.batch_size, seed=args.seed, rank=acc.process_index,
                              world=acc.num_processes, device=run.device,
                              on_device=data_on_device(args, data.train, run.device))
    loop = Loop(run, batches, Checkpointer(run, {"ema": ema}, batches))
    loop.resume()
    log, running = StatsLog(run), RunningMeans()
    if args.resume:
        log.truncate_after(loop.step)
    grid_z = torch.randn(args.grid_rows, args.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    augment, loss, num_classes = build_augment(args.aug), LOSSES[args.loss], cfg.num_classes
    run.print(f"loss {loss.name} + {args.aux_weight:g}·class CE, {args.optimizer} lr G {args.lr_g:g} / D {args.lr_d:g}, "
              f"n_critic {args.n_critic}; {loop.total_steps} steps ({batches.steps_per_epoch}/epoch) from step {loop.step}")
    last_fid = None

    def write_export(path):
        return save_export(path, "acgan", ema.for_sampling(), asdict(cfg), config_of(args), step=loop.step, epoch=loop.epoch,
                           weights="ema", train_seconds=loop.train_seconds,
                           extra={"data": data.info, "fid": last_fid, "fid_extractor": args.fid_extractor})

    for x in loop:
        critic_terms = []
        for i in range(args.n_critic):
            real = x if i == 0 else batches.next()
            d = d_update(acc, G, D, opt_d, augment(real), batches.last_labels, num_classes, loss, args)
            critic_terms.append(d)
            if not d["ok"]:
                break
        g = g_update(acc, G, D, opt_g, x.shape[0], num_classes, loss, args) if d["ok"] else {"ok": False}
        if not loop.tick(d["ok"] and g["ok"]):
            continue
        ema.update(acc.unwrap_model(G))
        for terms in (*critic_terms, g):   # only steps that were applied enter the logged means
            running.add(terms)
        if loop.due("log"):
            stats = running.read(acc)
            stats.update(epoch=loop.epoch, img_per_s=loop.recent_images_per_second(args.batch_size))
            log.log(loop.step, stats)
            shown = " ".join(f"{k} {stats[k]:.4g}" for k in ("d_loss", "g_loss", "aux_d", "aux_g", "cls_acc_real",
                                                              "cls_acc_fake") if k in stats)
            run.print(f"step {loop.step}/{loop.total_steps} ep {loop.epoch} {shown} | {stats['img_per_s']:.1f} img/s")
        if loop.due("sample") and run.is_main:
            save_grid(class_grid(ema.for_sampling(), grid_z), run.path("samples", f"step{loop.step:07d}.png"), nrow=num_classes)
            plot_curves(run.path("stats.jsonl"), run.path("loss.png"), keys=["d_loss", "g_loss", "aux_d", "aux_g"],
                        title=f"ACGAN losses ({loss.name})", ylabel="loss")
        if loop.due("fid"):
            last_fid = fid(ema.for_sampling(), loop.step)
        if loop.due("export") and run.is_main:
            write_export(run.path("exports", f"step{loop.step:07d}.safetensors"))
        if loop.due("save"):
            loop.save()
    loop.finish()

    if run.is_main:
        path = write_export(run.path("export.safetensors"))
        save_class_outputs(ema.for_sampling(), grid_z, run, lab.class_names)
        summary = f"done: {loop.step} steps in {loop.train_seconds:.0f} s; class grid {run.path('class_grid.png')}"
        if args.class_eval_samples:
            from utils.export import load_export
            metrics = evaluate_acgan(load_export(path), num_per_class=args.class_eval_samples,
                                     extractor=args.fid_extractor, weights=fid_weights_of(args), device=run.device,
                                     seed=args.seed)
            atomic_write_json(run.path("class_metrics.json"), metrics)
            per = ", ".join(f"{n} FID {e['fid']:.2f}" if e["fid"] is not None else f"{n} FID n/a"
                            for n, e in metrics["per_class"].items())
            summary += (f"; {per}; classifier accuracy on generated {metrics['classifier']['generated_accuracy']:.3f} "
                        f"(held-out real {metrics['classifier']['heldout_real_accuracy']:.3f})")
        run.print(summary + f"; export {path}")
    acc.end_training()


if __name__ == "__main__":
    main()
