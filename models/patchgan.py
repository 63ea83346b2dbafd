"""PatchGAN discriminator (Isola et al., pix2pix, CVPR 2017; the "NLayerDiscriminator" of pix2pix/CycleGAN
and of VQGAN, Esser et al. 2021).

It classifies overlapping patches instead of the whole image: the output is an N×1×h×w map of logits,
one per receptive field (70×70 px for ``n_layers=3``).  That targets local texture realism, which is
what plan 3.3 adds to the VAE, and is the discriminator CycleGAN uses.

Layout for ``n_layers`` = L:
    conv4×4 s2 (in → ndf), LeakyReLU(0.2)                           [no norm on the first layer]
    L−1 × [conv4×4 s2 (→ ndf·min(2^i, 8)), norm, LeakyReLU(0.2)]
    conv4×4 s1 (→ ndf·min(2^L, 8)), norm, LeakyReLU(0.2)
    conv4×4 s1 (→ 1)                                                  [logits, no activation]
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import NORMS, apply_spectral_norm, dcgan_init_, norm_layer

PATCHGAN_NORMS = NORMS  # pix2pix/VQGAN: 'batch'; CycleGAN: 'instance'; with spectral norm usually 'none'


def patchgan_output_size(resolution: int, n_layers: int) -> int:
    """Side of the logit map for a square input: L stride-2 convs (k4 p1) then two stride-1 convs (k4 p1)."""
    size = resolution
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    for _ in range(2):
        size = size + 2 - 4 + 1
    return size


def patchgan_receptive_field(n_layers: int) -> int:
    """Input pixels seen by one output logit (70 for the classic n_layers=3)."""
    rf = 1
    for _ in range(2):          # the two stride-1 convs, walked backwards from the output
        rf = rf + 3
    for _ in range(n_layers):   # stride-2 convs
        rf = (rf - 1) * 2 + 4
    return rf


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch",
                 spectral_norm: bool = False):
        super().__init__()
        if norm not in PATCHGAN_NORMS:
            raise ValueError(f"norm must be one of {PATCHGAN_NORMS}, got {norm!r}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
        self.n_layers = n_layers
        bias = norm == "none"  # a norm layer right after the conv makes its bias redundant
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride=stride, padding=1, bias=bias), norm_layer(norm, c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        dcgan_init_(self.net)  # pix2pix init: conv weights N(0, 0.02), norm scales N(1, 0.02)
        if spectral_norm:      # Miyato et al. 2018; a Lipschitz bound instead of (or with) a norm layer
            apply_spectral_norm(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def check_resolution(self, resolution: int) -> None:
        """Raise ValueError (one line) when the logit map would be empty for this input size."""
        if patchgan_output_size(resolution, self.n_layers) < 1:
            raise ValueError(f"a {self.n_layers}-layer PatchGAN needs inputs of at least "
                             f"{min_resolution(self.n_layers)} px, got {resolution}")


def min_resolution(n_layers: int) -> int:
    r = 1
    while patchgan_output_size(r, n_layers) < 1:
        r += 1
    return r

