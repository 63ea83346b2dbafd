"""CycleGAN training (train_cyclegan.py): the architecture and the prepared nets from the flags, both domains'
batches, the learning-rate schedule, the image pools' resume state, and one update of the generators and the
discriminators.  The losses and the image pool themselves are in models/cyclegan.py."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from models.cyclegan import (CycleGAN, CycleGANConfig, ImagePool, build_discriminator, discriminator_loss,
                             generator_losses)
from utils import fastpath
from utils.checkpoint import all_finite, step_if_finite
from utils.data import FaceData
from utils.ema import EMA
from utils.run import train_batches
from utils.trainer_setup import prepare_models


# ------------------------------------------------------------------------------------------------ nets

def model_config(args) -> CycleGANConfig:
    return CycleGANConfig(resolution=args.resolution, gen_width=args.gen_width, gen_blocks=args.gen_blocks,
                          disc=args.disc, disc_width=args.disc_width)


@dataclass
class CycleNets:
    """The four trained nets after ``accelerator.prepare`` (DDP-wrapped under several processes) and their two
    optimizers; ``gens`` is the unwrapped exported translator (the EMA's source), ``discriminators`` lists both
    D's parameters for the non-finite check."""
    gens: CycleGAN
    G_xy: nn.Module
    G_yx: nn.Module
    D_x: nn.Module
    D_y: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    discriminators: nn.ModuleList


def build_nets(args, cfg: CycleGANConfig, acc) -> tuple[CycleNets, EMA]:
    """Both generators, both discriminators and one Adam for each pair, prepared (utils.trainer_setup), and the
    EMA of the generators.  Built under --seed, without touching the per-process RNG streams that resume restores:
    the EMA copies the weights before DDP broadcasts rank 0's, so every process must start from the same ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        built = CycleGAN(cfg), build_discriminator(cfg), build_discriminator(cfg)
    gens, D_x, D_y = (m.to(acc.device) for m in built)
    betas = (args.beta1, args.beta2)
    opt_G = fastpath.make_optimizer(torch.optim.Adam, gens.parameters(), args.optimizer_impl, lr=args.lr, betas=betas)
    opt_D = fastpath.make_optimizer(torch.optim.Adam, [*D_x.parameters(), *D_y.parameters()], args.optimizer_impl,
                                    lr=args.lr, betas=betas)
    ema, (G_xy, G_yx, D_x, D_y, opt_G, opt_D) = prepare_models(acc, args, gens,
                                                                [gens.G_xy, gens.G_yx, D_x, D_y, opt_G, opt_D])
    return CycleNets(gens, G_xy, G_yx, D_x, D_y, opt_G, opt_D, nn.ModuleList([D_x, D_y])), ema


# ------------------------------------------------------------------------------------------------ data and state

class DomainBatches:
    """Training batches of both domains.  The larger domain drives the epoch (the paper's max(|X|, |Y|)): ``lead``
    is what the Loop iterates and checkpoints; ``other`` is drawn alongside, its position kept in the train state."""

    def __init__(self, run, data_x: FaceData, data_y: FaceData):
        self.x_drives = len(data_x.train) >= len(data_y.train)
        lead, other = (data_x, data_y) if self.x_drives else (data_y, data_x)
        self.lead = train_batches(run, lead.train, run.args.seed)
        self.other = train_batches(run, other.train, run.args.seed + 1)

    def pair(self, lead_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for one step, given the lead domain's batch."""
        other_batch = self.other.next()
        return (lead_batch, other_batch) if self.x_drives else (other_batch, lead_batch)


class PoolCheckpoint:
    """Both image pools of every process, kept in the resume checkpoint for an exact resume.

    Checkpointer stores each of its EMA slots as ``.module`` buffers in ema.safetensors (no pickles) and
    loads them back on every process; this object fills such a slot with the gathered pools of all ranks.
    """

    def __init__(self, pools: dict[str, ImagePool], world: int, resolution: int, device):
        self.pools, self.shape, self.device = pools, (3, resolution, resolution), device
        self.module = nn.Module()
        for name, pool in pools.items():
            self.module.register_buffer(f"{name}_images", torch.zeros(world, pool.size, *self.shape, device=device))
            self.module.register_buffer(f"{name}_count", torch.zeros(world, dtype=torch.long, device=device))
        self.num_updates = 0

    def collect(self, accelerator) -> None:
        """Gather every rank's pools into the module (collective: all processes call it before a save)."""
        for name, pool in self.pools.items():
            images, count = pool.state(self.shape, self.device)
            getattr(self.module, f"{name}_images").copy_(accelerator.gather(images[None].contiguous()))
            getattr(self.module, f"{name}_count").copy_(accelerator.gather(count))

    def restore(self, rank: int) -> None:
        for name, pool in self.pools.items():
            pool.load(getattr(self.module, f"{name}_images")[rank], getattr(self.module, f"{name}_count")[rank].item())


# ------------------------------------------------------------------------------------------------ the step

def lr_factor(step: int, total: int, schedule: str) -> float:
    """Paper schedule: constant for the first half, then linear decay to 0 at the last step."""
    if schedule == "none" or step < total // 2:
        return 1.0
    return max(0.0, (total - step) / max(1, total - total // 2))


@contextlib.contextmanager
def frozen(accelerator, *nets: nn.Module):
    """Discriminators during the generator update: no parameter gradients and no DDP gradient sync."""
    with contextlib.ExitStack() as stack:
        for net in nets:
            stack.enter_context(accelerator.no_sync(net))
            net.requires_grad_(False)
        try:
            yield
        finally:
            for net in nets:
                net.requires_grad_(True)


def cyclegan_update(acc, nets: CycleNets, pools: dict[str, ImagePool], x: torch.Tensor, y: torch.Tensor, args,
                    lr_scale: float = 1.0) -> tuple[dict, bool]:
    """One update of both generators, then of both discriminators, at learning rate ``args.lr · lr_scale``
    (``lr_factor``); returns the detached losses and whether both updates happened."""
    for opt in (nets.opt_G, nets.opt_D):
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_scale
    snapshot = {k: (p.images, p.count) for k, p in pools.items()}

    # Generators (Zhu et al. 2017 eq. 3): fool both discriminators, cycle back, optionally stay identity.
    # Each backward is followed by its own step: with fp16 the shared GradScaler changes its scale inside a
    # step, so gradients must be unscaled by the scale they were made with.  The discriminators see detached
    # fakes, so stepping G first changes nothing else.  step_if_finite skips an update whose gradients are
    # non-finite even though its loss is finite (or that overflowed in fp16).
    with frozen(acc, nets.D_x, nets.D_y):
        loss_G, parts, fake_y, fake_x = generator_losses(
            nets.G_xy, nets.G_yx, nets.D_x, nets.D_y, x, y, gan_loss=args.gan_loss, cycle_weight=args.cycle_weight,
            identity_weight=args.identity_weight)
        ok = bool(all_finite(loss_G))
        if ok:
            acc.backward(loss_G)
            ok = step_if_finite(acc, nets.opt_G, nets.gens)
    # Discriminators on real images and on the history of generated ones.
    loss_D_x = discriminator_loss(nets.D_x, x, pools["x"].query(fake_x), args.gan_loss)
    loss_D_y = discriminator_loss(nets.D_y, y, pools["y"].query(fake_y), args.gan_loss)
    if bool(all_finite(loss_D_x, loss_D_y)):
        acc.backward(loss_D_x + loss_D_y)
        ok = step_if_finite(acc, nets.opt_D, nets.discriminators) and ok
    else:
        ok = False
    if not ok:  # keep non-finite fakes out of the history
        for k, (images, count) in snapshot.items():
            pools[k].images, pools[k].count = images, count
    nets.opt_G.zero_grad(set_to_none=True)
    nets.opt_D.zero_grad(set_to_none=True)
    losses = {"loss_G": loss_G, **parts, "loss_D_x": loss_D_x, "loss_D_y": loss_D_y}
    return {k: v.detach() for k, v in losses.items()}, ok
