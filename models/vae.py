"""Convolutional VAE (plan phase 3): encoder → (μ, log σ²) → reparameterised z → decoder.

Architecture follows the DCGAN-style VAE of docs/plan.md, s003 (strided 4×4 convs + norm + LeakyReLU down to a
4×4 map, linear heads for μ and log σ², linear projection back, tanh output), with the plan's decoder
fix: each upsampling is ``Upsample(nearest) + Conv3×3`` instead of ``ConvTranspose2d``, which removes
checkerboard artifacts (Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016).
The number of down/upsamplings is log2(resolution / bottom), so 16, 32, 64 and 128 px share one
definition.

Loss conventions live in ``train_vae.py``; ``kl_divergence`` here returns nats per sample.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.layers import check_config_keys, norm_layer, up_conv

NORMS = ("batch", "group", "none")
# LDM's DiagonalGaussianDistribution clamps log σ² to this range so exp() cannot overflow (fp16 included).
LOGVAR_RANGE = (-30.0, 20.0)


class VAEConfigError(ValueError):
    """A model config that cannot be built; the message is one line."""


@dataclass
class VAEConfig:
    resolution: int = 64        # output size; a power of two ≥ 2·bottom
    latent_dim: int = 256       # plan 3.1
    base_channels: int = 64     # channels of the first encoder level; doubled per level
    max_channels: int = 512     # cap on the doubling
    bottom: int = 4             # spatial size of the last encoder feature map (s003: 4×4)
    norm: str = "batch"         # s003 uses BatchNorm; 'group' removes batch coupling

    def __post_init__(self):
        if self.norm not in NORMS:
            raise VAEConfigError(f"norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("resolution", "latent_dim", "base_channels", "max_channels", "bottom"):
            if int(getattr(self, name)) <= 0:
                raise VAEConfigError(f"{name} must be positive, got {getattr(self, name)}")
        ratio = self.resolution / self.bottom
        if ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise VAEConfigError(f"resolution/bottom must be a power of two ≥ 2, got {self.resolution}/{self.bottom}")

    @property
    def num_levels(self) -> int:
        return round(math.log2(self.resolution // self.bottom))

    def level_channels(self) -> list[int]:
        """Encoder output channels per level (finest first); the decoder mirrors them."""
        return [min(self.base_channels * 2 ** i, self.max_channels) for i in range(self.num_levels)]


class Encoder(nn.Module):
    """x (N×3×R×R in [-1,1]) → μ, log σ² (N×latent_dim)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = cfg.level_channels()
        layers, c_in = [], 3
        for c in chans:  # each level halves the resolution: R → R/2 → … → bottom
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=cfg.norm == "none"),
                       norm_layer(cfg.norm, c), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        flat = chans[-1] * cfg.bottom ** 2
        self.to_mu = nn.Linear(flat, cfg.latent_dim)
        self.to_logvar = nn.Linear(flat, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h).clamp(*LOGVAR_RANGE)


class UpBlock(nn.Module):
    """Nearest ×2 upsampling then a 3×3 conv: every output pixel gets the same number of kernel taps,
    unlike a stride-2 transposed conv whose uneven overlap paints a checkerboard (Odena et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.block = nn.Sequential(up_conv("nearest", c_in, c_out, bias=norm == "none"),
                                   norm_layer(norm, c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """z (N×latent_dim) → image (N×3×R×R in [-1,1])."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = cfg.level_channels()[::-1]          # coarsest first
        self.bottom, self.top_channels = cfg.bottom, chans[0]
        self.project = nn.Linear(cfg.latent_dim, chans[0] * cfg.bottom ** 2)
        self.project_act = nn.Sequential(norm_layer(cfg.norm, chans[0]), nn.ReLU(inplace=True))
        outs = chans[1:] + chans[-1:]               # last upsampling keeps the finest width
        self.ups = nn.Sequential(*[UpBlock(i, o, cfg.norm) for i, o in zip(chans, outs)])
        self.to_rgb = nn.Sequential(nn.Conv2d(outs[-1], 3, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.top_channels, self.bottom, self.bottom)
        return self.to_rgb(self.ups(self.project_act(h)))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + σ·ε, ε ~ N(0, I) (Kingma & Welling 2014, §2.4).

    The noise is an input rather than a sampling node, so ∂z/∂μ = 1 and ∂z/∂logσ² = ½·ε·σ exist."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample in nats, summed over latent dims (Kingma & Welling 2014, App. B):
    ½ Σ (μ² + σ² − 1 − log σ²). Computed in fp32."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


class VAE(nn.Module):
    """Root module of a VAE export: encoder + decoder and the sampling protocol of ``models/__init__.py``."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.resolution = cfg.resolution
        self.latent_dim = cfg.latent_dim
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction from a posterior sample, μ, log σ²)."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: decode the posterior mean."""
        return self.decode(self.encode(x)[0])

    def draw_latents(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I) drawn on the generator's device (CPU when None) and moved to the model, so a CPU
        generator gives the same latents on every device (as ``models.gan`` does)."""
        dev = generator.device if generator is not None else "cpu"
        return torch.randn(num, self.latent_dim, generator=generator, device=dev).to(self.device)

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, batch_size: int = 256,
               z: torch.Tensor | None = None) -> torch.Tensor:
        """num×3×R×R images in [-1, 1] decoded from the prior (or from the given ``z``), in batches."""
        z = self.draw_latents(num, generator) if z is None else z.to(self.device)
        return torch.cat([self.decode(chunk) for chunk in z.split(batch_size)]).float().clamp(-1, 1)

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode (1−t)·μ_a + t·μ_b for t in linspace(0, 1, steps): N×steps×3×R×R."""
        mu_a, mu_b = self.encode(x_a)[0], self.encode(x_b)[0]
        t = torch.linspace(0, 1, steps, device=mu_a.device, dtype=mu_a.dtype).view(1, steps, 1)
        z = torch.lerp(mu_a.unsqueeze(1), mu_b.unsqueeze(1), t).flatten(0, 1)
        return self.decode(z).float().clamp(-1, 1).view(len(x_a), steps, 3, self.resolution, self.resolution)


def build_from_config(model_config: dict) -> VAE:
    check_config_keys(VAEConfig, model_config, VAEConfigError, "VAE")
    return VAE(VAEConfig(**model_config))


def config_dict(model: VAE) -> dict:
    return asdict(model.config)
