"""GAN objectives as small named functions, the WGAN-GP gradient penalty and weight clipping.

Every critic returns raw scores (logits); each loss says how to read them:

* ``bce``       Goodfellow et al. 2014, non-saturating generator loss; D output is a logit.
* ``lsgan``     Mao et al. 2017, least squares with targets 0 (fake) / 1 (real).
* ``hinge``     Lim & Ye 2017 / Miyato et al. 2018 (as in SAGAN).
* ``wgan-gp``   Gulrajani et al. 2017: Wasserstein critic + gradient penalty (``gradient_penalty``).
* ``wgan-clip`` Arjovsky et al. 2017: Wasserstein critic + weight clipping (``clip_weights_``).

Losses are computed in float32 whatever the autocast dtype of the scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- discriminator / generator losses

def bce_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """−log D(x) − log(1 − D(G(z))); one-sided label smoothing (Salimans et al. 2016) sets the real target to 1 − s."""
    real, fake = real.float(), fake.float()
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 1.0 - smoothing))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def bce_g(fake: Tensor) -> Tensor:
    """Non-saturating: −log D(G(z))."""
    fake = fake.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def lsgan_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """½ E[(D(x) − b)²] + ½ E[D(G(z))²] with b = 1 − smoothing."""
    real, fake = real.float(), fake.float()
    return 0.5 * (real - (1.0 - smoothing)).pow(2).mean() + 0.5 * fake.pow(2).mean()


def lsgan_g(fake: Tensor) -> Tensor:
    return 0.5 * (fake.float() - 1.0).pow(2).mean()


def hinge_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()


def hinge_g(fake: Tensor) -> Tensor:
    return -fake.float().mean()


def wasserstein_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """E[D(G(z))] − E[D(x)]: minimising it maximises the critic's Wasserstein estimate."""
    return fake.float().mean() - real.float().mean()


def wasserstein_g(fake: Tensor) -> Tensor:
    return -fake.float().mean()


@dataclass(frozen=True)
class GANLoss:
    name: str
    d_loss: Callable[..., Tensor]         # (real_scores, fake_scores, smoothing) -> scalar
    g_loss: Callable[[Tensor], Tensor]    # (fake_scores) -> scalar
    metric: str                           # 'accuracy' or 'wasserstein': what the critic's scores tell us
    threshold: float = 0.0                # score separating "real" from "fake" for the accuracy metric
    smoothing_ok: bool = False            # label smoothing has a meaning for this loss


LOSSES = {
    "bce": GANLoss("bce", bce_d, bce_g, "accuracy", threshold=0.0, smoothing_ok=True),
    "lsgan": GANLoss("lsgan", lsgan_d, lsgan_g, "accuracy", threshold=0.5, smoothing_ok=True),
    "hinge": GANLoss("hinge", hinge_d, hinge_g, "accuracy", threshold=0.0),
    "wgan-gp": GANLoss("wgan-gp", wasserstein_d, wasserstein_g, "wasserstein"),
    "wgan-clip": GANLoss("wgan-clip", wasserstein_d, wasserstein_g, "wasserstein"),
}


def critic_metric(loss: GANLoss, real: Tensor, fake: Tensor) -> tuple[str, Tensor]:
    """('d_acc', fraction classified correctly) or ('w_dist', E[D(x)] − E[D(G(z))]); no host sync."""
    real, fake = real.detach().float(), fake.detach().float()
    if loss.metric == "wasserstein":
        return "w_dist", real.mean() - fake.mean()
    correct = torch.cat([(real > loss.threshold).float(), (fake <= loss.threshold).float()])
    return "d_acc", correct.mean()


# ---------------------------------------------------------------------------- Lipschitz constraints

def gradient_penalty(score_fn: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, weight: float = 10.0,
                     alpha: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """λ · E[(‖∇ₓ̂ D(x̂)‖₂ − 1)²] at x̂ = α·x + (1 − α)·G(z), α ~ U[0, 1] per sample (Gulrajani et al. 2017).

    Everything here is float32 with autocast off: the penalty differentiates the critic twice, and fp16/bf16
    gradients of a 1-Lipschitz target are too coarse.  ``score_fn`` must itself run in float32 (the trainer
    passes ``lambda x: critic(x, fp32=True)``).  Returns (penalty, mean gradient norm, detached).
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        real, fake = real.detach().float(), fake.detach().float()
        if alpha is None:
            alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        x_hat = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
        scores = score_fn(x_hat).float()
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(2, dim=1)
        return weight * (norm - 1.0).pow(2).mean(), norm.detach().mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> None:
    """WGAN weight clipping (Arjovsky et al. 2017): every parameter into [−c, c], after each critic update."""
    for p in module.parameters():
        p.clamp_(-c, c)
