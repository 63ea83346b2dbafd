"""GAN training (train_gan.py; its flags: utils/gan_flags.py): the data and the exported architecture from the flags,
the initial nets, the critic and learning-rate schedules, the updates of a step, and the sample grids.
bench/train_throughput.py and bench/gan_learning_check.py time and check this same code.

Class conditioning (``--cond-attr``, ACGAN, Odena et al. 2017) is an option of the same code: labelled batches, a
generator that takes (z, class), a critic with an auxiliary class head, and the class cross-entropy added to both
losses (``cond_aux_terms``).  ``num_classes == 0`` everywhere below means unconditional.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.acgan import ACGANConfig, ACGANDiscriminator, ACGANGenerator
from models.gan import GANConfig, build_critic, build_generator
from models.losses import clip_weights_, critic_metric, gradient_penalty
from utils.checkpoint import step_if_finite
from utils.class_eval import class_eval_summary, class_grid, save_class_outputs
from utils.images import save_grid

# docs/plan.md, s004 (after Arjovsky's WGAN code): 20 critic iterations for the first 50 generator steps and on every
# 500th, otherwise --n-critic.
WGAN_WARMUP_STEPS, WGAN_BURST_PERIOD, WGAN_BURST_ITERS = 50, 500, 20
# What the log line shows, in this order, when logged (critic metric: d_acc or the Wasserstein estimate).
SHOWN_STATS = ("d_loss", "g_loss", "gp", "d_acc", "w_dist", "aux_d", "aux_g", "cls_acc_real", "cls_acc_fake")


# ------------------------------------------------------------------------------------------------ data and nets

def family_of(args) -> str:
    """The export family (models/__init__.py): class-conditional runs write 'acgan' exports."""
    return "acgan" if args.cond_attr else "gan"


def training_data(args):
    """(FaceData, LabelledData or None): with --cond-attr only the images with an attribute row, and their classes."""
    if not args.cond_attr:
        from utils.data import face_data_from_args
        return face_data_from_args(args), None
    from utils.attributes import load_labelled_data
    labelled = load_labelled_data(args)
    return labelled.data, labelled


def model_config(args, class_names: list[str] | None = None) -> GANConfig:
    """The exported architecture: a GANConfig, or with --cond-attr an ACGANConfig (the same fields plus classes).
    args.attn_res is resolved by utils/gan_flags.py (--attn = models.gan.default_attn_res)."""
    common = dict(arch=args.arch, resolution=args.resolution, latent_dim=args.latent_dim, ngf=args.ngf, ndf=args.ndf,
                  g_norm=args.g_norm, d_norm=args.d_norm, upsample=args.upsample, attn_res=list(args.attn_res),
                  spectral_norm=args.sn, style_mode=args.style_mode, mapping_layers=args.mapping_layers,
                  noise=args.noise_inputs)
    if not args.cond_attr:
        return GANConfig(**common).validate()
    names = list(class_names or [f"not_{args.cond_attr}", args.cond_attr])
    return ACGANConfig(**common, num_classes=len(names), class_names=names, attr=args.cond_attr, embed=args.embed,
                       embed_dim=args.embed_dim).validate()


def build_nets(args, cfg: GANConfig):
    """(G, D) with the same initial weights on every process and for any process count: built under --seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if isinstance(cfg, ACGANConfig):
            return ACGANGenerator(cfg), ACGANDiscriminator(cfg)
        return build_generator(cfg), build_critic(cfg)


def describe_nets(G, D, cfg: GANConfig) -> str:
    absent = [r for r in cfg.attn_res if not 4 <= r <= cfg.resolution // 2]
    note = (f" (no {', '.join(map(str, absent))} feature map at {cfg.resolution} px: no attention there)"
            if absent else "")
    classes = f"; classes {', '.join(cfg.class_names)}" if isinstance(cfg, ACGANConfig) else ""
    return (f"generator {sum(p.numel() for p in G.parameters()) / 1e6:.2f}M params, critic "
            f"{sum(p.numel() for p in D.parameters()) / 1e6:.2f}M params; attention at {cfg.attn_res or 'none'}"
            f"{note}{classes}")


def standing_pass(args, cfg: GANConfig, batch: int, device):
    """One training-like generator call for the EMA's BatchNorm statistics (utils/ema.py); classes drawn uniformly."""
    if isinstance(cfg, ACGANConfig):
        return lambda g: g(torch.randn(batch, args.latent_dim, device=device),
                           torch.randint(cfg.num_classes, (batch,), device=device))
    return lambda g: g(torch.randn(batch, args.latent_dim, device=device))


# ------------------------------------------------------------------------------------------------ the step

def critic_iters(args, step: int) -> int:
    if args.n_critic_schedule == "wgan" and (step < WGAN_WARMUP_STEPS or (step + 1) % WGAN_BURST_PERIOD == 0):
        return WGAN_BURST_ITERS
    return args.n_critic


def lr_at(base: float, step: int, args, period: int, total: int) -> float:
    """Learning rate at a generator step (--lr-schedule): a pure function of the step, so resuming needs no scheduler
    state."""
    if args.lr_schedule == "none":
        return base
    floor = min(args.lr_min, base)
    if args.lr_schedule == "cosine":
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    exponent = step // period if args.lr_schedule == "step" else step / period
    return max(base * args.lr_gamma ** exponent, floor)


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) from what utils.data.Batches.next() returned."""
    return batch if isinstance(batch, tuple) else (batch, None)


def gan_step(acc, G, D, opt_g, opt_d, batch, batches, step: int, loss, args, augment, diffaug, num_classes: int = 0):
    """One generator step: critic_iters() critic updates, each on its own real batch (the first is ``batch``), then one
    generator update unless a critic update was skipped.  Returns (list of critic terms, generator terms)."""
    critic_terms = []
    for i in range(critic_iters(args, step)):
        real, labels = split_batch(batch if i == 0 else batches.next())
        d = critic_update(acc, G, D, opt_d, augment(real), loss, args, diffaug, labels=labels, num_classes=num_classes)
        critic_terms.append(d)
        if not d["ok"]:
            break
    n = split_batch(batch)[0].shape[0]
    g = generator_update(acc, G, D, opt_g, n, loss, args, diffaug, num_classes) if d["ok"] else {"ok": False}
    return critic_terms, g


def cond_aux_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ACGAN's auxiliary classifier loss L_C (Odena et al. 2017, eq. 2): class cross-entropy, in fp32."""
    return F.cross_entropy(logits.float(), labels)


def critic_update(acc, G, D, opt_d, real, loss, args, diffaug, labels=None, num_classes: int = 0) -> dict:
    n = real.shape[0]
    z = torch.randn(n, args.latent_dim, device=real.device)
    fake_labels = torch.randint(0, num_classes, (n,), device=real.device) if num_classes else None
    with torch.no_grad():
        fake = G(z) if not num_classes else G(z, fake_labels)
    real, fake = diffaug(real), diffaug(fake)
    s_real, s_fake = D(real), D(fake)   # separate passes: a BatchNorm critic must not mix real and fake statistics
    if not num_classes:
        d_loss = loss.d_loss(s_real, s_fake, args.label_smoothing)
        return critic_step(acc, D, opt_d, d_loss, {"d_loss": d_loss.detach()}, real, fake, s_real, s_fake, loss, args,
                           score=lambda x: D(x, fp32=True))
    # ACGAN (Odena et al. §3): D maximises L_S + L_C — the adversarial loss plus the class cross-entropy on real
    # images (their attribute) and on generated ones (the class G was asked for); the two CE terms are averaged.
    (s_real, c_real), (s_fake, c_fake) = s_real, s_fake
    adv = loss.d_loss(s_real, s_fake, args.label_smoothing)
    aux = 0.5 * (cond_aux_terms(c_real, labels) + cond_aux_terms(c_fake, fake_labels))
    out = {"d_loss": adv.detach(), "aux_d": aux.detach(),
           "cls_acc_real": (c_real.argmax(1) == labels).float().mean().detach()}
    return critic_step(acc, D, opt_d, adv + args.aux_weight * aux, out, real, fake, s_real, s_fake, loss, args,
                       score=lambda x: D(x, fp32=True)[0])


def critic_step(acc, D, opt_d, d_loss, out: dict, real, fake, s_real, s_fake, loss, args, score) -> dict:
    """The end of every critic update: the gradient penalty on ``score`` (the critic's real/fake score in fp32) for
    wgan-gp, the optimizer step unless a gradient is non-finite, weight clipping for wgan-clip, and the loss's critic
    metric; fills and returns ``out``."""
    if args.loss == "wgan-gp":
        gp, grad_norm = gradient_penalty(score, real, fake, args.gp_lambda)
        d_loss = d_loss + gp
        out.update(gp=gp.detach(), grad_norm=grad_norm)
    opt_d.zero_grad(set_to_none=True)
    acc.backward(d_loss)
    out["ok"] = step_if_finite(acc, opt_d, D)
    if args.loss == "wgan-clip":
        clip_weights_(D, args.clip)
    name, value = critic_metric(loss, s_real, s_fake)
    out[name] = value
    return out


def generator_update(acc, G, D, opt_g, n: int, loss, args, diffaug, num_classes: int = 0) -> dict:
    z = torch.randn(n, args.latent_dim, device=acc.device)
    if not num_classes:
        g_loss = loss.g_loss(D(diffaug(G(z))))
        out = {}
    else:  # ACGAN: G also minimises the class cross-entropy of its images for the classes it was asked for
        labels = torch.randint(0, num_classes, (n,), device=acc.device)
        score, logits = D(diffaug(G(z, labels)))
        aux = cond_aux_terms(logits, labels)
        g_loss = loss.g_loss(score) + args.aux_weight * aux
        out = {"aux_g": aux.detach(), "cls_acc_fake": (logits.argmax(1) == labels).float().mean().detach()}
    opt_g.zero_grad(set_to_none=True)
    acc.backward(g_loss)
    return {"g_loss": g_loss.detach(), **out, "ok": step_if_finite(acc, opt_g, G)}


# ------------------------------------------------------------------------------------------------ outputs

def fixed_latents(args) -> torch.Tensor:
    """The grids' z, from their own generator: the same latents in every run with this seed (ACGAN: one per row)."""
    rows = args.grid_rows if args.cond_attr else args.grid_samples
    return torch.randn(rows, args.latent_dim, generator=torch.Generator().manual_seed(args.seed))


def save_fixed_grid(model, z: torch.Tensor, path) -> None:
    """The fixed-noise grid; for a conditional model each row is one z rendered as every class."""
    if hasattr(model, "num_classes"):
        save_grid(class_grid(model, z), path, nrow=model.num_classes)
    else:
        save_grid(model.sample(len(z), z=z), path)


def final_outputs(run, args, model, z: torch.Tensor, export_path) -> str:
    """samples.png; with --cond-attr also class_grid.png, samples_<class>.png and (--class-eval-samples) per-class
    metrics.  Returns the end of the run's summary line."""
    save_fixed_grid(model, z, run.path("samples.png"))
    if not args.cond_attr:
        return f"samples {run.path('samples.png')}"
    save_class_outputs(model, z, run)
    text = f"class grid {run.path('class_grid.png')}"
    return text + (class_eval_summary(run, args, export_path) if args.class_eval_samples else "")
