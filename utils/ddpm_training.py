"""DDPM training (train_ddpm.py, plan phase 4): the exported config from the flags, the learning-rate warm-up,
one denoising update, and the loss per timestep quartile.  bench/train_throughput.py times this same step."""
from __future__ import annotations

import torch

from models.ddpm import DiffusionConfig, diffusion_loss
from utils.checkpoint import step_if_finite

QUARTILES = 4  # loss is also logged per quarter of [0, T): where in the trajectory the model is still wrong


def model_config(args) -> DiffusionConfig:
    return DiffusionConfig(resolution=args.resolution, base_channels=args.base_channels, channel_mult=args.channel_mult,
                           layers_per_block=args.layers_per_block, attn_res=args.attn_res,
                           attn_head_dim=args.attn_head_dim, dropout=args.dropout, beta_schedule=args.beta_schedule,
                           prediction_type=args.prediction_type, num_train_timesteps=args.num_train_timesteps,
                           clip_sample=args.clip_sample, timestep_spacing=args.timestep_spacing,
                           set_alpha_to_one=args.set_alpha_to_one, sample_steps=args.sample_steps, eta=args.eta)


def lr_at(step: int, args) -> float:
    """Linear warm-up then constant (Ho et al.); a pure function of the step, so resume needs no scheduler state."""
    if args.warmup_steps == 0:
        return args.lr
    return args.lr * min(1.0, (step + 1) / args.warmup_steps)


def ddpm_update(acc, model, scheduler, opt, x, args):
    """One step of the simple loss (Ho et al. 2020; ε or v target): returns the per-sample loss, its timesteps, the
    gradient norm before clipping (None without --grad-clip) and whether the update happened (finite gradients)."""
    per_sample, t = diffusion_loss(model, scheduler, x)
    loss = per_sample.mean()
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    grad_norm = acc.clip_grad_norm_(model.parameters(), args.grad_clip) if args.grad_clip > 0 else None
    return per_sample, t, grad_norm, step_if_finite(acc, opt, model, grad_norm)


class QuartileLoss:
    """Sum and count of the per-sample loss in each quarter of [0, T), kept on the device (no host sync per step)."""

    def __init__(self, num_train_timesteps: int, device):
        self.T = num_train_timesteps
        self.sums = torch.zeros(QUARTILES, device=device, dtype=torch.float64)
        self.counts = torch.zeros(QUARTILES, device=device, dtype=torch.float64)

    def add(self, per_sample: torch.Tensor, t: torch.Tensor) -> None:
        q = (t * QUARTILES) // self.T
        self.sums.index_add_(0, q, per_sample.detach().double())
        self.counts.index_add_(0, q, torch.ones_like(per_sample, dtype=torch.float64))

    def read_and_reset(self, acc) -> dict:
        """Means since the last read over all processes (one all-reduce, one host copy); NaN for an empty quartile."""
        both = acc.reduce(torch.stack([self.sums, self.counts]), reduction="sum").cpu()
        self.sums.zero_()
        self.counts.zero_()
        sums, counts = both[0], both[1]
        out = {"loss": float(sums.sum() / counts.sum().clamp(min=1))}
        for i in range(QUARTILES):
            lo, hi = i * self.T // QUARTILES, (i + 1) * self.T // QUARTILES
            out[f"loss_t{lo}-{hi}"] = float(sums[i] / counts[i]) if counts[i] > 0 else float("nan")
        return out

    def state(self) -> dict:
        return {"sums": self.sums.tolist(), "counts": self.counts.tolist()}

    def load(self, state: dict) -> None:
        if state:
            self.sums.copy_(torch.tensor(state["sums"], dtype=torch.float64))
            self.counts.copy_(torch.tensor(state["counts"], dtype=torch.float64))


def quartile_keys(T: int) -> list[str]:
    return ["loss"] + [f"loss_t{i * T // QUARTILES}-{(i + 1) * T // QUARTILES}" for i in range(QUARTILES)]
