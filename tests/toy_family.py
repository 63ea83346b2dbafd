"""A throwaway model family for evaluate.py tests: a tiny GAN-shaped module that follows the sampling protocol.

Register it with ``models.FAMILIES["toy"] = "tests.toy_family"``.  Run as a script, it registers itself and
calls ``evaluate.main`` with the remaining arguments (used for multi-process tests under torchrun):

    PYTHONPATH=. python -m torch.distributed.run --nproc_per_node 2 tests/toy_family.py --ckpt ... [evaluate flags]
"""
from __future__ import annotations

import sys

import torch
from torch import nn


class ToyGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int):
        super().__init__()
        self.z_dim, self.base = z_dim, resolution // 4
        self.fc = nn.Linear(z_dim, 16 * self.base * self.base)
        self.up = nn.Sequential(nn.Upsample(scale_factor=4, mode="nearest"), nn.Conv2d(16, 3, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 16, self.base, self.base))


class ToyGAN(nn.Module):
    """Root module: .generator (sampling) and .discriminator (training only), like a real GAN export."""

    def __init__(self, z_dim: int = 8, resolution: int = 32):
        super().__init__()
        self.resolution = resolution
        self.generator = ToyGenerator(z_dim, resolution)
        self.discriminator = nn.Conv2d(3, 1, 4, 4)

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, steps: int | None = None,
               eta: float | None = None, precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
        """``steps``/``eta``/``precision``/``channels_last`` mimic DDPM's options (tests register this module as
        'ddpm' to see them passed): ``steps`` dims the output so that passing it visibly changes the samples."""
        scale = 1.0 if steps is None else steps / (steps + 1)
        # Noise on the generator's device (CPU when None), then moved: the convention of models/gan.py.
        z = torch.randn(num, self.generator.z_dim, generator=generator,
                        device=generator.device if generator is not None else "cpu")
        return self.generator(z.to(next(self.parameters()).device)) * scale


def build_from_config(cfg: dict) -> ToyGAN:
    return ToyGAN(z_dim=int(cfg.get("z_dim", 8)), resolution=int(cfg.get("resolution", 32)))


def make_toy_model(seed: int = 0, z_dim: int = 8, resolution: int = 32) -> tuple[ToyGAN, dict]:
    torch.manual_seed(seed)
    cfg = {"z_dim": z_dim, "resolution": resolution}
    return build_from_config(cfg), cfg


def register() -> None:
    import models
    models.FAMILIES["toy"] = "tests.toy_family"


if __name__ == "__main__":
    import evaluate

    register()
    evaluate.main(sys.argv[1:])
