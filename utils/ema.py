"""Exponential moving average of model weights (sample from EMA, as the plan and DiT do).

Our own ~40 lines rather than diffusers' EMAModel or torch's AveragedModel because it must
(1) copy buffers too — spectral-norm power-iteration vectors and BatchNorm statistics live there,
(2) be a plain nn.Module so the exported EMA network is the same class as the trained one, and
(3) expose state_dict/load_state_dict so Accelerate's save_state/load_state resume it exactly.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        # Warm-up min(decay, (1+n)/(10+n)) (as in diffusers' EMAModel / TF's ExponentialMovingAverage):
        # with a fixed 0.9999 a short run would export almost its random initialisation.
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_p = [p for p in self.module.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        if ema_p:
            torch._foreach_lerp_(ema_p, [s.to(e.dtype) for e, s in zip(ema_p, src_p)], 1.0 - d)
        for e, s in zip(self.module.buffers(), model.buffers()):
            e.copy_(s)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state.get("decay", self.decay))

    def to(self, device) -> "EMA":
        self.module.to(device)
        return self
