"""Generic building blocks shared by the generators and discriminators of every family.

* ``SelfAttention``: the plan's SAGAN block (Zhang et al. 2019, "Self-Attention GANs").
* ``norm_layer``: one factory for the normalisations the flags name (batch / group / instance / layer / none).
* ``up_conv``: 2× upsampling by a fractionally-strided convolution or by resize-convolution
  (Odena et al. 2016, "Deconvolution and checkerboard artifacts"; docs/plan.md, s001 and s004).
* ``apply_spectral_norm``: spectral normalisation of every conv/linear weight (Miyato et al. 2018).
* ``dcgan_init_``: N(0, 0.02) weights as in Radford et al. 2016.
"""
from __future__ import annotations

import math
from dataclasses import fields

import torch
from torch import nn

NORMS = ("batch", "group", "instance", "layer", "none")
UPSAMPLE_MODES = ("transposed", "nearest", "bilinear")


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + γ · softmax(QᵀK / √d) V, with γ initialised to 0 (starts as the identity).

    Written with explicit matmul + softmax (as in the plan) rather than F.scaled_dot_product_attention:
    the fused CUDA kernels have no double backward, which the WGAN-GP gradient penalty needs through the critic.
    """

    def __init__(self, in_ch: int):
        super().__init__()
        mid = max(in_ch // 8, 1)
        self.q = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.k = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.v = nn.Conv2d(in_ch, in_ch, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))
        self._mid = mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).view(b, self._mid, -1).transpose(-2, -1)   # b × hw × mid
        k = self.k(x).view(b, self._mid, -1)                     # b × mid × hw
        v = self.v(x).view(b, c, -1)                             # b × c × hw
        attn = torch.softmax(q @ k * self._mid ** -0.5, dim=-1)  # b × hw(query) × hw(key)
        return x + self.gamma * (v @ attn.transpose(-2, -1)).view(b, c, h, w)


def group_count(channels: int, max_groups: int = 32) -> int:
    """Largest group count ≤ max_groups that divides ``channels`` (32 as in Wu & He 2018 when possible)."""
    return math.gcd(channels, max_groups)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation over a C×H×W feature map.

    'layer' is GroupNorm with one group (normalises over C, H, W per sample), the layer norm that
    Gulrajani et al. 2017 suggest for a WGAN-GP critic; 'instance' keeps affine parameters.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}; choose from {', '.join(NORMS)}")


def up_conv(mode: str, in_ch: int, out_ch: int, bias: bool = True) -> nn.Module:
    """Double the spatial size and map in_ch → out_ch channels.

    'transposed': ConvTranspose2d(k=4, s=2, p=1), the DCGAN layer (prone to checkerboard artifacts);
    'nearest' / 'bilinear': resize, then Conv2d(k=3, p=1) (resize-convolution, Odena et al. 2016).
    """
    if mode == "transposed":
        return nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=bias)
    if mode in ("nearest", "bilinear"):
        up = nn.Upsample(scale_factor=2, mode=mode, align_corners=False if mode == "bilinear" else None)
        return nn.Sequential(up, nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias))
    raise ValueError(f"unknown upsampling mode {mode!r}; choose from {', '.join(UPSAMPLE_MODES)}")


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise every Conv/ConvTranspose/Linear weight in ``module`` (in place; returns it).

    Uses torch.nn.utils.parametrizations.spectral_norm: the power-iteration vectors are buffers, so they are
    saved, resumed and copied by the EMA like any other state.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    targets = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    for m in targets:
        spectral_norm(m, n_power_iterations=n_power_iterations)
    return module


@torch.no_grad()
def dcgan_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Radford et al. 2016: conv/linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0.

    Attention's γ stays 0 so that attention blocks start as the identity.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def check_config_keys(config_cls, d: dict, error: type[Exception], what: str) -> None:
    """An export's model config may only name fields this code knows: a newer or foreign file fails loudly
    instead of building a silently different model."""
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise error(f"unknown {what} config keys: {', '.join(unknown)} (this code knows: {', '.join(sorted(known))})")
