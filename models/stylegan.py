"""StyleGAN-lite generator (``--arch stylegan-lite``): a small style-based generator that plugs into train_gan.py.

Reproduces the parts of Karras et al. 2019 (StyleGAN) and 2020 (StyleGAN2) that change what the latent space
looks like, at DCGAN cost:

* mapping network z → w: pixel-norm of z, then ``mapping_layers`` (default 4) Linear + LeakyReLU(0.2) layers;
* a learned constant 4×4 input instead of projecting z;
* per-layer styles from w via a learned affine map, injected either by
  - ``style_mode="adain"`` (StyleGAN): conv → instance norm → scale·x + bias with (scale, bias) = A(w), or
  - ``style_mode="modulated"`` (StyleGAN2): the conv weight is modulated by A(w) per input channel and
    demodulated per output channel, which removes AdaIN's droplet artefacts;
* optional per-pixel noise inputs (``noise=True``) with learned per-channel strength (initialised to 0);
* resize-then-conv upsampling (nearest or bilinear), two styled 3×3 convs per resolution, 1×1 toRGB + tanh;
* ``w_avg``: running mean of w during training (β = 0.995), for the truncation trick
  ``sample(..., truncation=ψ)``: w ← w_avg + ψ·(w − w_avg).

Not reproduced (not needed at 64 px): equalized learning rate, the mapping net's 0.01 lr multiplier, style
mixing regularisation, progressive growing / skip toRGBs, path-length regularisation.  The critic is the
DCGAN critic, so every ``--loss`` of train_gan.py works unchanged.

This module does not import models.gan (which registers this generator in its ``ARCHS``), so it only relies
on the config fields it reads: resolution, latent_dim, ngf, max_mult, upsample, style_mode, mapping_layers, noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STYLE_MODES = ("adain", "modulated")
STYLE_UPSAMPLE = ("nearest", "bilinear")
W_AVG_BETA = 0.995   # StyleGAN's w_avg tracking rate


# ------------------------------------------------------------------------------------------------ primitives

def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each latent to unit average square (StyleGAN's input normalisation of z)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Adaptive instance norm (Huang & Belongie 2017): per-sample, per-channel mean → bias, std → scale.

    x: N×C×H×W; scale, bias: N×C.  Statistics in float32: under fp16 autocast ε = 1e-8 would underflow to 0.
    """
    xf = x.float()
    mean = xf.mean(dim=(2, 3), keepdim=True)
    var = xf.var(dim=(2, 3), keepdim=True, unbiased=False)
    out = (xf - mean) * torch.rsqrt(var + eps) * scale.float()[:, :, None, None] + bias.float()[:, :, None, None]
    return out.to(x.dtype)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, *, demodulate: bool = True,
                     eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 weight (de)modulation as one grouped convolution (Karras et al. 2020, §2.2).

    x: N×I×H×W, weight: O×I×k×k, style: N×I.  w'_oik = s_i·w_oik, then w''_oik = w'_oik / sqrt(Σ_ik w'_oik² + ε):
    for i.i.d. unit-variance input every output channel has (about) unit variance.
    """
    n, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    wgt = weight.unsqueeze(0) * style.view(n, 1, c_in, 1, 1)                   # N×O×I×k×k
    if demodulate:
        wgt = wgt * torch.rsqrt(wgt.pow(2).sum(dim=(2, 3, 4), keepdim=True) + eps)
    out = F.conv2d(x.reshape(1, n * c_in, h, w), wgt.reshape(n * c_out, c_in, k, k), padding=k // 2, groups=n)
    return out.reshape(n, c_out, h, w)   # reshape: the conv output may be channels_last (--channels-last)


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise × learned per-channel strength (0 at init)."""

    def __init__(self, channels: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = generator.device if generator is not None else x.device
        noise = torch.randn(n, 1, h, w, generator=generator, device=dev).to(device=x.device, dtype=x.dtype)
        return x + self.strength * noise


class StyledConv(nn.Module):
    """3×3 conv whose output is styled by w: AdaIN (StyleGAN) or weight (de)modulation (StyleGAN2)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, mode: str, noise: bool):
        super().__init__()
        self.mode = mode
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3) / math.sqrt(in_ch * 9))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Affine A: AdaIN needs (scale, bias) per output channel, modulation one scale per input channel.
        n_style = 2 * out_ch if mode == "adain" else in_ch
        self.affine = nn.Linear(w_dim, n_style)
        nn.init.zeros_(self.affine.bias)
        with torch.no_grad():   # scales start at 1 (StyleGAN initialises the style bias to 1)
            self.affine.bias[:out_ch if mode == "adain" else in_ch] = 1.0
        self.noise = NoiseInjection(out_ch) if noise else None
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_generator: torch.Generator | None = None) -> torch.Tensor:
        style = self.affine(w)
        if self.mode == "modulated":
            x = modulated_conv2d(x, self.weight, style)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        if self.noise is not None:
            x = self.noise(x, noise_generator)
        x = self.act(x + self.bias.view(1, -1, 1, 1))
        if self.mode == "adain":   # StyleGAN 2019: conv → noise → bias → act → AdaIN
            scale, bias = style.chunk(2, dim=1)
            x = adain(x, scale, bias)
        return x


class MappingNetwork(nn.Module):
    """z → w: pixel norm, then ``layers`` × (Linear + LeakyReLU 0.2)."""

    def __init__(self, z_dim: int, w_dim: int, layers: int):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.LeakyReLU(0.2))])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_norm(z.flatten(1)))


# ------------------------------------------------------------------------------------------------ generator

class StyleGANGenerator(nn.Module):
    """Same protocol as ``DCGANGenerator`` (resolution, latent_dim, forward(z), sample(...)) plus
    ``mapping(z) -> w``, ``synthesis(w) -> image`` and the ``w_avg`` buffer.  w has ``latent_dim`` dimensions."""

    def __init__(self, cfg):
        super().__init__()
        if cfg.style_mode not in STYLE_MODES:
            raise ValueError(f"style_mode must be one of {', '.join(STYLE_MODES)}, got {cfg.style_mode!r}")
        if cfg.upsample not in STYLE_UPSAMPLE:
            raise ValueError(f"stylegan-lite upsamples by resizing: upsample must be one of "
                             f"{', '.join(STYLE_UPSAMPLE)}, got {cfg.upsample!r}")
        self.config = cfg
        self.resolution, self.latent_dim, self.w_dim = cfg.resolution, cfg.latent_dim, cfg.latent_dim
        n = int(math.log2(cfg.resolution // 4)) + 1            # feature maps at 4, 8, …, R
        width = [cfg.ngf * min(cfg.max_mult, 2 ** (n - 1 - k)) for k in range(n)]
        self.mapping_net = MappingNetwork(cfg.latent_dim, self.w_dim, cfg.mapping_layers)
        self.const = nn.Parameter(torch.randn(1, width[0], 4, 4))
        self.layers = nn.ModuleList([StyledConv(width[0], width[0], self.w_dim, cfg.style_mode, cfg.noise)])
        for k in range(1, n):
            self.layers.append(StyledConv(width[k - 1], width[k], self.w_dim, cfg.style_mode, cfg.noise))
            self.layers.append(StyledConv(width[k], width[k], self.w_dim, cfg.style_mode, cfg.noise))
        self.upsample_before = {2 * k - 1 for k in range(1, n)}   # layer indices that start a new resolution
        self.to_rgb = nn.Conv2d(width[-1], 3, 1)
        self.register_buffer("w_avg", torch.zeros(self.w_dim))

    @property
    def device(self) -> torch.device:
        return self.const.device

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z: N×latent_dim → w: N×latent_dim. In training mode also moves ``w_avg`` towards the batch mean of w."""
        w = self.mapping_net(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().float().mean(0).to(self.w_avg.dtype), 1.0 - W_AVG_BETA)
        return w

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        return w if psi == 1.0 else self.w_avg.to(w.dtype) + psi * (w - self.w_avg.to(w.dtype))

    def synthesis(self, w: torch.Tensor, noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """w: N×w_dim (one style for every layer) → N×3×R×R in [-1, 1]."""
        x = self.const.expand(w.shape[0], -1, -1, -1)
        mode = self.config.upsample
        for i, layer in enumerate(self.layers):
            if i in self.upsample_before:
                x = F.interpolate(x, scale_factor=2, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
            x = layer(x, w, noise_generator)
        return torch.tanh(self.to_rgb(x))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, batch_size: int = 256,
               z: torch.Tensor | None = None, w: torch.Tensor | None = None, truncation: float = 1.0) -> torch.Tensor:
        """``num`` images from z ~ N(0, I) (or the given z, or w), with optional truncation ψ.

        z is drawn on the generator's device and moved, as in DCGANGenerator; noise inputs (if any) are drawn from
        the same generator after z, so a seeded generator gives the same images on every call.
        """
        if w is None and z is None:
            z = torch.randn(num, self.latent_dim, generator=generator,
                            device=generator.device if generator is not None else "cpu")
        chunks = (w if w is not None else z).split(batch_size)
        out = []
        for chunk in chunks:
            chunk = chunk.to(self.device)
            ws = chunk if w is not None else self.mapping(chunk)
            out.append(self.synthesis(self.truncate(ws, truncation), generator))
        return torch.cat(out).float()


__all__ = ["StyleGANGenerator", "MappingNetwork", "StyledConv", "NoiseInjection", "adain", "modulated_conv2d",
           "pixel_norm", "STYLE_MODES", "STYLE_UPSAMPLE", "W_AVG_BETA"]
