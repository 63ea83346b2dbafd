"""VGG-16 perceptual loss at relu1_2, relu2_2, relu3_3 (plan 3.2; Johnson et al., ECCV 2016).

The network is torchvision's ``vgg16().features`` cut after relu3_3 (layer index 15), frozen, fed
images mapped from [-1, 1] to ImageNet normalisation.  Weights come from, in this order:

  1. ``weights_path`` (``--vgg-weights``) or ``$FACEGEN_VGG_WEIGHTS``: a local state dict with
     torchvision key names (``features.0.weight`` … or ``0.weight`` …), ``.safetensors`` or ``.pth``;
  2. torchvision's ImageNet download (``VGG16_Weights.IMAGENET1K_V1``), cached by torch.hub;
  3. ``init='random'``: Kaiming-initialised, for tests only (the choice is recorded in the run config).

Feature distance (``normalize``):
  * ``'unit'`` (default): each feature vector is divided by its L2 norm over channels and the squared
    distance is averaged over positions, as in LPIPS (Zhang et al., CVPR 2018, eq. 1) without the
    learned per-channel weights.  Each layer contributes a value in [0, 4], so λ_perc = 0.1 has the
    same meaning at every resolution and for any weight file.
  * ``'none'``: mean squared difference of raw activations (Johnson et al. 2016); its scale depends on
    the layer and on the weights.
The loss is the sum over the three layers, averaged over the batch.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torchvision vgg16 "D" config up to relu3_3: conv widths, "M" = 2×2 max-pool.
VGG16_TO_RELU3_3 = (64, 64, "M", 128, 128, "M", 256, 256, 256)
# Indices in vgg16().features of the ReLUs whose outputs are compared.
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("unit", "none")
INITS = ("imagenet", "random")
ENV_WEIGHTS = "FACEGEN_VGG_WEIGHTS"


class VGGWeightsError(SystemExit):
    """VGG weights cannot be found or loaded; exits with a one-line message saying what to pass."""

    def __init__(self, msg: str):
        super().__init__(f"error: {msg}")


def vgg16_features_to_relu3_3() -> nn.Sequential:
    """The first 16 layers of torchvision's ``vgg16().features`` with the same indices (so same key names)."""
    layers, c_in = [], 3
    for v in VGG16_TO_RELU3_3:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = v
    net = nn.Sequential(*layers)
    for m in net.modules():  # torchvision's VGG init, so a random net has sensible activation scales
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


def resolve_weights_path(weights_path: str | None) -> str | None:
    """The explicit path, else $FACEGEN_VGG_WEIGHTS, else None (→ torchvision download)."""
    return weights_path or os.environ.get(ENV_WEIGHTS) or None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise VGGWeightsError(f"VGG weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VGGWeightsError(f"cannot read VGG weights {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")


def _download_imagenet_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG-16 state dict (torch.hub cache, download on first use)."""
    from torchvision.models import VGG16_Weights
    return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)


def load_features_state(net: nn.Sequential, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the conv weights of ``net`` from a torchvision-named state dict (extra keys are ignored)."""
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()}
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise VGGWeightsError(f"{source} lacks VGG-16 feature weights {missing[:4]} (expected torchvision key names "
                              f"like features.0.weight up to features.14.bias)")
    bad = [k for k in wanted if state[k].shape != wanted[k].shape]
    if bad:
        raise VGGWeightsError(f"{source}: shape mismatch for {bad[:3]}; is this a VGG-16 state dict?")
    net.load_state_dict({k: state[k] for k in wanted})


def build_vgg_features(weights_path: str | None = None, init: str = "imagenet") -> tuple[nn.Sequential, str]:
    """The frozen feature net and a description of where its weights came from."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    net = vgg16_features_to_relu3_3()
    if init == "random":
        source = "random init (tests only)"
    elif (path := resolve_weights_path(weights_path)) is not None:
        load_features_state(net, read_state_dict(path), str(path))
        source = f"file {path}"
    else:
        try:
            state = _download_imagenet_state()
        except Exception as e:  # offline, proxy, hash mismatch: say what to pass instead of a traceback
            raise VGGWeightsError(
                f"cannot fetch torchvision's ImageNet VGG-16 weights ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:100] if str(e) else 'no message'}); pass --vgg-weights PATH "
                f"(a torchvision vgg16 state dict, .safetensors or .pth) or set ${ENV_WEIGHTS}") from None
        load_features_state(net, state, "torchvision VGG16_Weights.IMAGENET1K_V1")
        source = "torchvision VGG16_Weights.IMAGENET1K_V1"
    return net.eval().requires_grad_(False), source


class PerceptualLoss(nn.Module):
    """Frozen VGG-16 feature distance between two image batches in [-1, 1]; returns a scalar."""

    def __init__(self, weights_path: str | None = None, init: str = "imagenet", normalize: str = "unit",
                 layers: tuple[str, ...] = tuple(TAPS)):
        super().__init__()
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        unknown = [name for name in layers if name not in TAPS]
        if unknown:
            raise ValueError(f"unknown VGG layers {unknown}; known: {list(TAPS)}")
        self.features, self.source = build_vgg_features(weights_path, init)
        self.normalize = normalize
        self.taps = sorted(TAPS[name] for name in layers)
        self.features = self.features[:self.taps[-1] + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # always frozen: no dropout/BN here, but keep eval semantics explicit

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) * 0.5 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # One VGG pass over both batches; the target half carries no gradient.
        feats = self.feature_maps(torch.cat([x, target.detach()]))
        total = x.new_zeros((), dtype=torch.float32)
        for f in feats:
            a, b = f.float().chunk(2)
            if self.normalize == "unit":
                a, b = F.normalize(a, dim=1, eps=1e-10), F.normalize(b, dim=1, eps=1e-10)
                total = total + (a - b).pow(2).sum(dim=1).mean()
            else:
                total = total + (a - b).pow(2).mean()
        return total
