"""GAN training (train_gan.py): the exported architecture from the flags, the initial nets, the critic schedule
and the two updates of a step.  bench/train_throughput.py and bench/gan_learning_check.py time and check this same
code."""
from __future__ import annotations

import torch

from models.gan import GANConfig, build_critic, build_generator
from models.losses import clip_weights_, critic_metric, gradient_penalty
from utils.checkpoint import step_if_finite

# docs/plan.md, s004 (after Arjovsky's WGAN code): 20 critic iterations for the first 50 generator steps and on every
# 500th, otherwise --n-critic.
WGAN_WARMUP_STEPS, WGAN_BURST_PERIOD, WGAN_BURST_ITERS = 50, 500, 20


# ------------------------------------------------------------------------------------------------ nets

def model_config(args) -> GANConfig:
    """The exported architecture; attention only at sizes that exist as feature maps (4 … R/2)."""
    wanted = [16, 32] if args.resolution >= 128 else [16]
    attn = [r for r in wanted if r <= args.resolution // 2] if args.attn else []
    return GANConfig(arch=args.arch, resolution=args.resolution, latent_dim=args.latent_dim, ngf=args.ngf,
                     ndf=args.ndf, g_norm=args.g_norm, d_norm=args.d_norm, upsample=args.upsample, attn_res=attn,
                     spectral_norm=args.sn, style_mode=args.style_mode, mapping_layers=args.mapping_layers,
                     noise=args.noise_inputs).validate()


def build_nets(args, cfg: GANConfig):
    """(G, D) with the same initial weights on every process and for any process count: built under --seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return build_generator(cfg), build_critic(cfg)


# ------------------------------------------------------------------------------------------------ the step

def critic_iters(args, step: int) -> int:
    if args.n_critic_schedule == "wgan" and (step < WGAN_WARMUP_STEPS or (step + 1) % WGAN_BURST_PERIOD == 0):
        return WGAN_BURST_ITERS
    return args.n_critic


def critic_update(acc, G, D, opt_d, real, loss, args, diffaug) -> dict:
    z = torch.randn(real.shape[0], args.latent_dim, device=real.device)
    with torch.no_grad():
        fake = G(z)
    real, fake = diffaug(real), diffaug(fake)
    s_real, s_fake = D(real), D(fake)   # separate passes: a BatchNorm critic must not mix real and fake statistics
    d_loss = loss.d_loss(s_real, s_fake, args.label_smoothing)
    out = {"d_loss": d_loss.detach()}
    return critic_step(acc, D, opt_d, d_loss, out, real, fake, s_real, s_fake, loss, args,
                       score=lambda x: D(x, fp32=True))


def critic_step(acc, D, opt_d, d_loss, out: dict, real, fake, s_real, s_fake, loss, args, score) -> dict:
    """The end of every critic update (train_gan.py, train_acgan.py): the gradient penalty on ``score`` (the
    critic's real/fake score in fp32) for wgan-gp, the optimizer step unless a gradient is non-finite, weight
    clipping for wgan-clip, and the loss's critic metric; fills and returns ``out``."""
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


def generator_update(acc, G, D, opt_g, n: int, loss, args, diffaug) -> dict:
    z = torch.randn(n, args.latent_dim, device=acc.device)
    g_loss = loss.g_loss(D(diffaug(G(z))))
    opt_g.zero_grad(set_to_none=True)
    acc.backward(g_loss)
    return {"g_loss": g_loss.detach(), "ok": step_if_finite(acc, opt_g, G)}
