"""GAN optimisers (train_gan.py, with or without --cond-attr): each adversarial loss's reference optimiser settings
and the --optimizer factory."""
from __future__ import annotations

import torch

from utils import fastpath

# Optimiser settings of each loss's reference setup, used for flags left unset (the resolved values are
# printed and stored in config.json and in every export).
LOSS_DEFAULTS = {
    "bce": dict(optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),    # DCGAN, plan 2.1
    "lsgan": dict(optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),  # Mao et al. 2017
    "hinge": dict(optimizer="adam", lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9, n_critic=1),    # SAGAN (TTUR)
    "wgan-gp": dict(optimizer="adam", lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9, n_critic=2),  # plan 2.2
    "wgan-clip": dict(optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, beta1=0.5, beta2=0.999, n_critic=5,
                      clip=0.01),                                                               # Arjovsky et al.
}
OPTIMIZERS = ("adam", "rmsprop", "sgd", "nesterov")


def make_optimizer(args, params, lr: float) -> torch.optim.Optimizer:
    """The --optimizer, with the kernels of --optimizer-impl (fused/foreach: same update, float rounding only)."""
    impl = getattr(args, "optimizer_impl", "auto")
    if args.optimizer == "adam":
        return fastpath.make_optimizer(torch.optim.Adam, params, impl, lr=lr, betas=(args.beta1, args.beta2))
    if args.optimizer == "rmsprop":
        return fastpath.make_optimizer(torch.optim.RMSprop, params, impl, lr=lr)
    return fastpath.make_optimizer(torch.optim.SGD, params, impl, lr=lr, momentum=args.momentum,
                                   nesterov=args.optimizer == "nesterov")
