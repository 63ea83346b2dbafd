"""VAE training (train_vae.py, plan phase 3): the nets and optimizers of the flags, every term of the objective,
VQGAN's adaptive adversarial weight, one update of the VAE and its discriminator, and the held-out evaluation.
The objective and its reasons are described at the top of train_vae.py; bench/train_throughput.py builds and
times these same nets and step.
"""
from __future__ import annotations

import contextlib

import torch

from models.patchgan import PatchDiscriminator
from models.perceptual import PerceptualLoss
from models.vae import VAE, VAEConfig, kl_divergence
from utils import fastpath
from utils.checkpoint import all_finite, step_if_finite
from utils.data import to_float

RECON_LOSSES = {
    "mse": lambda x_hat, x: (x_hat - x).pow(2).mean(),  # Gaussian decoder, σ² = ½
    "l1": lambda x_hat, x: (x_hat - x).abs().mean(),    # Laplace decoder, b = 1
}
# Adaptive weight constants of taming-transformers (calculate_adaptive_weight): ε in the denominator, clamp max.
ADAPTIVE_EPS, ADAPTIVE_MAX = 1e-4, 1e4
# Adam betas of the discriminator, as in VQGAN (taming-transformers) — momentum 0.5 keeps the GAN game stable.
DISC_BETAS = (0.5, 0.9)


# ------------------------------------------------------------------------------------------------ nets

def model_config(args) -> VAEConfig:
    return VAEConfig(resolution=args.resolution, latent_dim=args.latent_dim, base_channels=args.base_channels,
                     max_channels=args.max_channels, norm=args.norm)


def build_discriminator(args) -> PatchDiscriminator | None:
    """The PatchGAN of these flags, None when --lambda-adv is 0."""
    if args.lambda_adv <= 0:
        return None
    return PatchDiscriminator(3, args.disc_ndf, args.disc_layers, args.disc_norm, spectral_norm=args.disc_sn)


def build_nets(args, cfg: VAEConfig, device, acc=None):
    """(VAE, PatchGAN or None, perceptual loss or None), the same initial weights on every process (the EMA copies
    them before DDP broadcasts rank 0's), built under --seed without touching the per-process global RNG streams
    that resume restores.  The VAE and the PatchGAN stay on the CPU; the (untrained) perceptual loss goes to
    ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        vae = VAE(cfg)
        disc = build_discriminator(args)
        perceptual = None
        if args.lambda_perc > 0:
            # Under Accelerate one download into the torch.hub cache, not one per process.
            with acc.main_process_first() if acc is not None else contextlib.nullcontext():
                perceptual = PerceptualLoss(args.vgg_weights, args.vgg_init, args.perc_norm).to(device)
    return vae, disc, perceptual


def make_optimizers(args, vae: VAE, disc: PatchDiscriminator | None):
    """(Adam of the VAE, Adam of the discriminator or None) with the kernels of --optimizer-impl (fused/foreach:
    the same update rule, float rounding only)."""
    impl = getattr(args, "optimizer_impl", "auto")
    opt = fastpath.make_optimizer(torch.optim.Adam, vae.parameters(), impl, lr=args.lr,
                                  betas=(args.adam_beta1, args.adam_beta2))
    if disc is None:
        return opt, None
    return opt, fastpath.make_optimizer(torch.optim.Adam, disc.parameters(), impl, lr=args.disc_lr, betas=DISC_BETAS)


# ------------------------------------------------------------------------------------------------ objective

def vae_terms(args, x_hat, x, mu, logvar, perceptual, disc_module, gan, *, last_layer: torch.Tensor | None = None,
              adv_scale: float = 1.0, grad_scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every term of the VAE objective as a 0-d tensor (no host sync); 'loss' is the weighted total.

    With a discriminator, 'adv_w' is the weight on L_adv: λ_adv · ``adv_scale`` (the ramp), times the adaptive
    weight for ``--adv-weight adaptive``, which needs ``last_layer`` (``last_layer_weight``) and, under an fp16
    GradScaler, its scale ``grad_scale``."""
    x_hat = x_hat.float()
    terms = {"rec": RECON_LOSSES[args.recon](x_hat, x), "kl": kl_divergence(mu, logvar).mean()}
    nll = terms["rec"]
    if perceptual is not None:
        terms["perc"] = perceptual(x_hat, x)
        nll = nll + args.lambda_perc * terms["perc"]
    total = nll + args.beta * terms["kl"] / x[0].numel()
    if disc_module is not None:
        terms["adv"] = gan.g_loss(frozen_logits(disc_module, x_hat))
        weight = torch.full((), args.lambda_adv * adv_scale, device=x_hat.device)  # a fill: no host-to-device copy
        if args.adv_weight == "adaptive":
            if last_layer is None:
                raise ValueError("--adv-weight adaptive needs the decoder's last layer (last_layer_weight(vae))")
            weight = weight * adaptive_weight(nll, terms["adv"], last_layer, grad_scale)
        terms["adv_w"] = weight
        total = total + weight * terms["adv"]
    terms["loss"] = total
    return terms


def last_layer_weight(vae: VAE) -> torch.Tensor:
    """The weight of the decoder's last conv (before tanh): where VQGAN compares the two gradients."""
    return vae.decoder.to_rgb[0].weight


def adaptive_weight(nll: torch.Tensor, adv: torch.Tensor, last_layer: torch.Tensor,
                    grad_scale: torch.Tensor | None = None) -> torch.Tensor:
    """‖∇_w nll‖ / (‖∇_w adv‖ + 1e-4), clamped to [0, 1e4], detached; w = ``last_layer`` (Esser et al. 2021,
    eq. 7; taming-transformers calculate_adaptive_weight).  Scaled by λ_adv, the adversarial gradient at the
    output layer stays λ_adv times the reconstruction gradient however confident the discriminator gets.

    ``grad_scale``: an fp16 GradScaler's scale; both losses are scaled by it so their fp16 backward does not
    underflow, and the norms unscaled in fp32."""
    s = 1.0 if grad_scale is None else grad_scale.float()
    g_nll, = torch.autograd.grad(nll * s, last_layer, retain_graph=True)
    g_adv, = torch.autograd.grad(adv * s, last_layer, retain_graph=True)
    w = (g_nll.float().norm() / s) / (g_adv.float().norm() / s + ADAPTIVE_EPS)
    # An fp16 overflow gives NaN here: weight 0 keeps the loss finite so the backward runs and the GradScaler
    # sees the overflow (and lowers its scale) instead of the step being skipped before it.
    return torch.nan_to_num(w, nan=0.0).clamp(0.0, ADAPTIVE_MAX).detach()


def adv_ramp(step: int, start: int, ramp: int) -> float:
    """Factor on the adversarial weight: 0 at the discriminator's first step ``start``, linear to 1 at
    ``start + ramp`` (1 throughout for ramp 0).  A pure function of the step: resume needs no extra state."""
    if ramp <= 0:
        return 1.0
    return min(1.0, max(0.0, (step - start) / ramp))


def fp16_grad_scale(acc) -> torch.Tensor | None:
    """The current scale of Accelerate's fp16 GradScaler as a tensor (no host sync), None without one."""
    scaler = getattr(acc, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return None
    scale = getattr(scaler, "_scale", None)  # created by the first scaler.scale(); until then the initial scale
    return scale if scale is not None else torch.tensor(scaler.get_scale(), device=acc.device)


# ------------------------------------------------------------------------------------------------ the step

def frozen_logits(disc: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D(x) with D's parameters frozen: the VAE step must not leave gradients in the discriminator."""
    disc.requires_grad_(False)
    try:
        return disc(x)
    finally:
        disc.requires_grad_(True)


def disc_terms(disc, gan, x, x_hat) -> dict[str, torch.Tensor]:
    real, fake = disc(x), disc(x_hat.detach())
    return {"d_loss": gan.d_loss(real, fake), "d_real": real.detach().float().mean(),
            "d_fake": fake.detach().float().mean()}


def finite_everywhere(acc, *tensors: torch.Tensor) -> torch.Tensor:
    """all_finite, agreed by every process: a NaN on one reaches all through the gradient all-reduce,
    so all must skip the update together."""
    ok = all_finite(*tensors)
    if acc.num_processes > 1:
        ok = acc.reduce(ok.float().view(1), reduction="sum")[0] == acc.num_processes
    return ok


def vae_update(acc, vae, opt, disc, opt_d, gan, perceptual, x, args, adv_scale: float = 1.0) -> tuple[dict, bool]:
    """One VAE step (and one discriminator step when ``disc`` is given); returns the terms and whether both
    updates happened.  ``adv_scale``: the ramp factor on λ_adv (``adv_ramp``).  A non-finite loss skips the
    backward; finite losses with non-finite gradients (or an fp16 overflow) skip the update in step_if_finite."""
    adaptive = disc is not None and args.adv_weight == "adaptive"
    with acc.autocast():
        x_hat, mu, logvar = vae(x)
        terms = vae_terms(args, x_hat, x, mu, logvar, perceptual, acc.unwrap_model(disc) if disc is not None else None,
                          gan, adv_scale=adv_scale,
                          last_layer=last_layer_weight(acc.unwrap_model(vae)) if adaptive else None,
                          grad_scale=fp16_grad_scale(acc) if adaptive else None)
        if disc is not None:  # both players see the same, not yet updated discriminator (VQGAN alternates per step)
            terms.update(disc_terms(disc, gan, x, x_hat))
    checked = [terms["loss"], terms["d_loss"]] if disc is not None else [terms["loss"]]
    if not bool(finite_everywhere(acc, *checked)):
        return terms, False
    # Each backward is followed by its own optimizer step: with fp16 the shared GradScaler updates its scale
    # inside every step, so a gradient must be unscaled by the scale it was made with.
    opt.zero_grad(set_to_none=True)
    acc.backward(terms["loss"])
    ok = step_if_finite(acc, opt, vae)
    if disc is not None:
        opt_d.zero_grad(set_to_none=True)
        acc.backward(terms["d_loss"])
        ok = step_if_finite(acc, opt_d, disc) and ok
    return terms, ok


# ------------------------------------------------------------------------------------------------ evaluation

@torch.no_grad()
def evaluate_heldout(model: VAE, images: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Reconstruction error of decode(μ) on held-out images, and their KL.

    mse:     mean squared error per pixel value, images in [-1, 1];
    mse_255: the same in 0–255 units (each image's mean squared error, averaged over images);
    kl:      nats per image.
    """
    sq, kl, n = 0.0, 0.0, 0
    for chunk in images.split(batch_size):
        x = to_float(chunk.to(model.device))
        mu, logvar = model.encode(x)
        sq += (model.decode(mu).float() - x).pow(2).flatten(1).mean(1).sum().item()
        kl += kl_divergence(mu, logvar).sum().item()
        n += len(x)
    return {"mse": sq / n, "mse_255": sq / n * 127.5 ** 2, "kl": kl / n, "images": n}


class HeldoutEval:
    """``evaluate_heldout`` of the EMA VAE, logged as an 'eval' record and printed; at most once per step (the final
    evaluation often coincides with a periodic one)."""

    def __init__(self, run, log, ema, images: torch.Tensor, batch_size: int):
        self.run, self.log, self.ema, self.images, self.batch_size = run, log, ema, images, batch_size
        self.step, self.metrics = None, None

    def __call__(self, loop, tag: str = "eval") -> dict:
        if self.step == loop.step:
            return self.metrics
        m = evaluate_heldout(self.ema.for_sampling(), self.images, self.batch_size)
        self.step, self.metrics = loop.step, m
        self.log.log(loop.step, {"epoch": loop.epoch, **m}, kind="eval")
        self.run.print(f"{tag} step {loop.step} (epoch {loop.epoch}): held-out recon MSE {m['mse']:.5f} per pixel "
                       f"in [-1,1] = {m['mse_255']:.1f} in 0-255 units, KL {m['kl']:.2f} nats ({m['images']} images)")
        return m

    def at(self, step: int) -> dict | None:
        """The metrics of ``step`` if it was evaluated, else None."""
        return self.metrics if self.step == step else None
