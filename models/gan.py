"""GAN generators and critics, configured by one dataclass that is stored in every export.

Architecture ``dcgan`` (Radford et al. 2016), generalised to any power-of-two resolution ≥ 16:
stacks are built by the number of doublings from 4×4, so 16/32 px (tests) and 64/128 px (plan 1A)
share one code path.  At 64 px with ngf=ndf=64 it is exactly the DCGAN of plan 2.1:

    G: z → Linear → 512×4² → 256×8² → 128×16² → 64×32² → 3×64² (tanh)
    D: 3×64² → 64×32² → 128×16² → 256×8² → 512×4² → 1 (raw score)

Channel widths are ``ngf · min(8, 2^k)`` (capped at 8×, so 128 px adds a 512-channel 8×8 stage instead of a
1024-channel 4×4 one).  Self-attention (SAGAN) is inserted after the *feature map* of each resolution listed
in ``attn_res`` — in G after the block that produces it, in D after the block that produces it.  A resolution
that has no feature map in the stack (e.g. 16 at 16 px, where 16×16 is the image itself) has no attention.

The generator is the exported root module (``build_from_config`` rebuilds it); it implements
``resolution``, ``latent_dim``, ``forward(z)`` and ``sample(num, generator=...)``.  A new architecture
(e.g. ``stylegan-lite``, models/stylegan.py) is one more entry in ``ARCHS``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from models.layers import (NORMS, UPSAMPLE_MODES, SelfAttention, apply_spectral_norm, check_config_keys, dcgan_init_,
                           norm_layer, up_conv)
from models.stylegan import STYLE_MODES, STYLE_UPSAMPLE, StyleGANGenerator

G_NORMS = ("batch", "group", "none")
D_NORMS = ("batch", "instance", "layer", "none")


class GANConfigError(ValueError):
    """A model config that cannot be built; the message is one line."""


@dataclass
class GANConfig:
    arch: str = "dcgan"
    resolution: int = 64
    latent_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    g_norm: str = "batch"            # generator: batch | group | none
    d_norm: str = "batch"            # critic: batch | instance | layer | none
    upsample: str = "transposed"     # transposed | nearest | bilinear
    attn_res: list[int] = field(default_factory=list)   # feature-map sizes with SAGAN attention (G and D)
    spectral_norm: bool = False      # on every critic weight
    max_mult: int = 8                # channel cap: ngf·max_mult
    # stylegan-lite only (models/stylegan.py):
    style_mode: str = "adain"        # adain (StyleGAN) | modulated (StyleGAN2 weight (de)modulation)
    mapping_layers: int = 4          # z → w MLP depth
    noise: bool = False              # per-pixel noise inputs

    def validate(self) -> "GANConfig":
        if self.arch not in ARCHS:
            raise GANConfigError(f"unknown GAN arch {self.arch!r}; choose from {', '.join(ARCHS)}")
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise GANConfigError(f"GAN resolution must be a power of two ≥ 16, got {r}")
        for name, value, allowed in (("g_norm", self.g_norm, G_NORMS), ("d_norm", self.d_norm, D_NORMS),
                                     ("upsample", self.upsample, UPSAMPLE_MODES)):
            if value not in allowed:
                raise GANConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.arch == "stylegan-lite":
            if self.style_mode not in STYLE_MODES:
                raise GANConfigError(f"style_mode must be one of {', '.join(STYLE_MODES)}, got {self.style_mode!r}")
            if self.upsample not in STYLE_UPSAMPLE:
                raise GANConfigError(f"stylegan-lite upsamples by resizing: upsample must be one of "
                                     f"{', '.join(STYLE_UPSAMPLE)}, got {self.upsample!r}")
        for name in ("latent_dim", "ngf", "ndf", "max_mult", "mapping_layers"):
            if int(getattr(self, name)) <= 0:
                raise GANConfigError(f"{name} must be positive, got {getattr(self, name)}")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "GANConfig":
        check_config_keys(cls, d, GANConfigError, "GAN")
        cfg = cls(**d)
        cfg.attn_res = [int(a) for a in cfg.attn_res]
        return cfg.validate()


def num_doublings(resolution: int) -> int:
    return int(math.log2(resolution // 4))


def default_attn_res(resolution: int) -> list[int]:
    """The sizes of train_gan.py's ``--attn`` shorthand: SAGAN self-attention (Zhang et al. 2019) on the 16² feature
    map, and on 32² as well at 128 px, where that map exists (≤ R/2: at R the map is the image itself)."""
    wanted = [16, 32] if resolution >= 128 else [16]
    return [r for r in wanted if r <= resolution // 2]


# -------------------------------------------------------------------------------------------------------------
# DCGAN
# -------------------------------------------------------------------------------------------------------------

class DCGANGenerator(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.config = cfg
        self.resolution, self.latent_dim = cfg.resolution, cfg.latent_dim
        n = num_doublings(cfg.resolution)
        width = [cfg.ngf * min(cfg.max_mult, 2 ** (n - 1 - k)) for k in range(n)]  # channels at 4·2^k px
        affine_norm = cfg.g_norm != "none"   # a following norm has its own shift, so the conv needs no bias
        # Projection of z to a 4×4 map (Linear + reshape, as in DCGAN / docs/plan.md, s004).
        self.project = nn.Linear(cfg.latent_dim, width[0] * 16, bias=not affine_norm)
        self.project_act = nn.Sequential(norm_layer(cfg.g_norm, width[0]), nn.ReLU(inplace=True))
        blocks = []
        for k in range(1, n):
            size = 4 * 2 ** k
            layers = [up_conv(cfg.upsample, width[k - 1], width[k], bias=not affine_norm),
                      norm_layer(cfg.g_norm, width[k]), nn.ReLU(inplace=True)]
            if size in cfg.attn_res:
                layers.append(SelfAttention(width[k]))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Sequential(up_conv(cfg.upsample, width[-1], 3, bias=True), nn.Tanh())
        dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: N×latent_dim (or N×latent_dim×1×1) → N×3×R×R in [-1, 1]."""
        h = self.project(z.flatten(1)).view(z.shape[0], -1, 4, 4)
        return self.to_rgb(self.blocks(self.project_act(h)))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, batch_size: int = 256,
               z: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` images from z ~ N(0, I).

        z is drawn on the generator's device (CPU for a CPU ``torch.Generator`` or None) and then moved, so a CPU
        generator gives the same images on every device; batching does not change them either.
        """
        if z is None:
            z = torch.randn(num, self.latent_dim, generator=generator,
                            device=generator.device if generator is not None else "cpu")
        out = [self(chunk.to(self.device)) for chunk in z.split(batch_size)]
        return torch.cat(out).float()


class DCGANCritic(nn.Module):
    """DCGAN discriminator / WGAN critic. Returns one raw score per image (no sigmoid: losses take logits)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.config = cfg
        n = num_doublings(cfg.resolution)
        width = [cfg.ndf * min(cfg.max_mult, 2 ** k) for k in range(n)]   # channels at R/2^(k+1) px
        blocks = []
        for k in range(n):
            size = cfg.resolution // 2 ** (k + 1)
            in_ch = 3 if k == 0 else width[k - 1]
            # No norm on the first layer (Radford et al. 2016): it would normalise away the image statistics.
            norm = "none" if k == 0 else cfg.d_norm
            layers = [nn.Conv2d(in_ch, width[k], 4, stride=2, padding=1, bias=norm == "none"),
                      norm_layer(norm, width[k]), nn.LeakyReLU(0.2, inplace=True)]
            if size in cfg.attn_res:
                layers.append(SelfAttention(width[k]))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(width[-1], 1, 4, stride=1, padding=0)   # 4×4 → 1×1
        dcgan_init_(self)
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor, *, fp32: bool = False) -> torch.Tensor:
        """x: N×3×R×R → N scores.

        ``fp32=True`` runs in float32 even inside autocast.  It must be decided here, not by the caller:
        Accelerate wraps a prepared model's forward in its own autocast, which would re-enable reduced
        precision under a caller's ``autocast(enabled=False)``; the gradient penalty needs full precision.
        """
        if fp32:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.head(self.blocks(x.float())).flatten()
        return self.head(self.blocks(x)).flatten()


# -------------------------------------------------------------------------------------------------------------
# Registry and builders (the one place where an architecture is selected)
# -------------------------------------------------------------------------------------------------------------

ARCHS = {"dcgan": (DCGANGenerator, DCGANCritic),
         "stylegan-lite": (StyleGANGenerator, DCGANCritic)}   # Karras et al. 2019/2020, DCGAN critic


def build_generator(cfg: GANConfig) -> nn.Module:
    return ARCHS[cfg.validate().arch][0](cfg)


def build_critic(cfg: GANConfig) -> nn.Module:
    return ARCHS[cfg.validate().arch][1](cfg)


def build_from_config(model_config: dict) -> nn.Module:
    """Rebuild the exported generator from the stored config (``models.build_model('gan', ...)``)."""
    return build_generator(GANConfig.from_dict(dict(model_config)))


__all__ = ["GANConfig", "GANConfigError", "DCGANGenerator", "DCGANCritic", "ARCHS", "G_NORMS", "D_NORMS", "NORMS",
           "build_generator", "build_critic", "build_from_config", "num_doublings", "default_attn_res"]
