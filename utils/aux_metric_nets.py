"""Networks of the metrics beyond FID: VGG-16 features for precision/recall, torchvision's Inception-v3 with
its ImageNet head for the Inception Score, and LPIPS-Alex for diversity.  Same offline policy as
``utils.feature_nets``: local files first, a one-line ``MetricsError`` naming what to fetch otherwise.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from utils.feature_nets import FeatureExtractor, MetricsError, download, file_sha256, tensor_sha256

# torchvision's ImageNet classifiers (the only downloads here, and only when no local file is given).
TV_INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
TV_ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_RANDOM = "random"  # --lpips-weights value for a random AlexNet trunk: tests only, never a reportable number


# ---------------------------------------------------------------------------------------------
# VGG-16 features for precision/recall
# ---------------------------------------------------------------------------------------------

PR_FEATURES = ("inception", "vgg16")


class VGG16Features(FeatureExtractor):
    """A torchvision-named VGG-16 state dict as a precision/recall feature network (input resized to 224²).

    With the classifier in the state dict: fc2 after its ReLU (4096-d), the layer Kynkäänniemi et al. (2019)
    and the StyleGAN2-ADA metrics use (they load NVIDIA's own vgg16.pt, so numbers are close, not identical).
    With conv weights only up to relu3_3 (``features.0``…``features.14``, e.g. the file the perceptual loss
    uses): the relu3_3 map global-average-pooled (256-d).  ``layer`` and ``label`` say which.
    Weights are read by models.perceptual (same key conventions and errors as ``--vgg-weights``).
    """

    input_size = 224

    def __init__(self, state: dict, *, path: str | os.PathLike | None = None):
        super().__init__()
        from models.perceptual import (IMAGENET_MEAN, IMAGENET_STD, VGGWeightsError, load_features_state,
                                       vgg16_features_to_relu3_3)

        where = str(path) if path else "VGG-16 state dict"
        if any(k.startswith("classifier.") for k in state):
            from torchvision.models import vgg16

            with torch.device("meta"):  # no 138M-parameter random init before loading
                net = vgg16(weights=None, init_weights=False)
            try:
                net.load_state_dict(state, strict=True, assign=True)
            except RuntimeError:
                raise MetricsError(f"{where} has classifier weights but is not a full torchvision vgg16 "
                                   f"state dict") from None
            # classifier[:5] = fc1, ReLU, Dropout (inactive in eval), fc2, ReLU
            self.features, self.pool, self.head = net.features, net.avgpool, net.classifier[:5]
            self.layer, self.dim = "fc2", 4096
            self.label = "vgg16 fc2 (4096-d)"
        else:
            self.features = vgg16_features_to_relu3_3()
            try:
                load_features_state(self.features, state, where)
            except VGGWeightsError as e:
                raise MetricsError(str(e.code).removeprefix("error: ")) from None
            self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Identity()
            self.layer, self.dim = "relu3_3-gap", 256
            self.label = "vgg16 relu3_3 global-avg-pool (256-d)"
        self.name = f"vgg16-{self.layer}"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self.float().requires_grad_(False)  # a half-precision file still runs in float32
        self.eval()
        if path:
            self.path, self.sha256 = str(Path(path).resolve()), file_sha256(path)
        else:
            self.sha256 = tensor_sha256(v for _, v in sorted(self.state_dict().items()))
        self.weights_note = _safetensors_note(path)

    def describe(self) -> dict:
        return {**super().describe(), "layer": self.layer, "weights_note": self.weights_note}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features((x - self.mean) / self.std)).flatten(1))


def _safetensors_note(path) -> str | None:
    """The 'source' a .safetensors weight file states about itself (e.g. anti-aliased training), if any."""
    if not path or Path(path).suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("source")


def load_vgg16_features(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
                        ) -> VGG16Features:
    """VGG-16 P/R features from ``weights`` or $FACEGEN_VGG_WEIGHTS (never downloaded: P/R is optional)."""
    from models.perceptual import ENV_WEIGHTS, VGGWeightsError, read_state_dict, resolve_weights_path

    path = resolve_weights_path(weights)
    if path is None:
        raise MetricsError(f"--pr-features vgg16 needs --pr-vgg-weights PATH or ${ENV_WEIGHTS}: a torchvision vgg16 "
                           "state dict (.safetensors/.pth; with its classifier for fc2 features)")
    try:
        state = read_state_dict(path)
    except VGGWeightsError as e:
        raise MetricsError(str(e.code).removeprefix("error: ")) from None
    return VGG16Features(state, path=path).to(device)


# ---------------------------------------------------------------------------------------------
# Inception Score classifier (needs a 1000-class head, which clean-fid's file does not have)
# ---------------------------------------------------------------------------------------------

def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise MetricsError(f"{path}: cannot read a state dict ({type(e).__name__}: {str(e)[:80]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MetricsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


class InceptionClassifier(nn.Module):
    """torchvision Inception-v3 with its ImageNet head: clean-resized [0, 255] 299² input -> 1000 logits.

    torchvision's checkpoint was trained on inputs in [-1, 1] (its ``transform_input`` maps ImageNet-normalised
    tensors back to that range), so we feed x/127.5 − 1 directly with ``transform_input=False``.
    """

    name = "torchvision-inception_v3-imagenet"

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        from torchvision.models import inception_v3

        path = Path(path).expanduser()
        if not path.is_file():
            raise MetricsError(f"--is-weights {path} does not exist; download {TV_INCEPTION_URL} there")
        self.net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        state = _load_state_dict(path)
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError:
            raise MetricsError(f"{path} is not a torchvision inception_v3 state dict "
                               f"(expected the keys of {TV_INCEPTION_URL.rsplit('/', 1)[-1]})") from None
        self.net.eval().requires_grad_(False)
        self.path = str(path.resolve())
        self.sha256 = file_sha256(path)

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 127.5 - 1.0)


def load_is_classifier(path: str | os.PathLike | None, device: str | torch.device = "cpu"
                       ) -> tuple[InceptionClassifier | None, str | None]:
    """(classifier, None) or (None, reason it is unavailable) — IS is never faked from a headless network."""
    if not path:
        return None, (f"no classifier-head Inception (clean-fid's FID network has none); pass --is-weights PATH "
                      f"with torchvision's {TV_INCEPTION_URL}")
    return InceptionClassifier(path).to(device), None


# ---------------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018), AlexNet trunk
# ---------------------------------------------------------------------------------------------

def _torch_hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_lpips(weights: str | None = None, device: str | torch.device = "cpu"):
    """LPIPS-Alex with the lpips package's own linear layers and an AlexNet trunk from ``weights``.

    ``weights``: torchvision AlexNet state dict (alexnet-owt-7be5be79.pth or .safetensors); 'random' for a
    seeded random trunk (tests only; recorded as such); None: torch hub's cache, else a download.
    Returns (net, info) or (None, {"not_computed": reason}).
    """
    import lpips
    from torchvision.models import alexnet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips passes torchvision's deprecated `pretrained=`
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # makes the 'random' trunk reproducible; real trunks are overwritten below
            net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    info = {"net": "alex", "version": net.version, "linear_layers": "lpips package v0.1 alex.pth"}
    if weights == LPIPS_RANDOM:
        info.update(backbone="random-init (seed 0) — NOT the LPIPS metric; for tests only", backbone_sha256=None)
        return net.to(device).eval(), info
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MetricsError(f"--lpips-weights {path} does not exist; download {TV_ALEXNET_URL} there")
    else:
        path = _torch_hub_file(TV_ALEXNET_URL)
        if not path.is_file():
            try:
                download(TV_ALEXNET_URL, path)
            except OSError as e:
                return None, {"not_computed": f"AlexNet weights unavailable ({str(e)[:60]}); download "
                                              f"{TV_ALEXNET_URL} and pass --lpips-weights PATH"}
    trunk = alexnet(weights=None)
    state = _load_state_dict(path)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    try:
        trunk.features.load_state_dict({k[len("features."):]: v for k, v in features.items()}, strict=True)
    except RuntimeError:
        raise MetricsError(f"{path} is not a torchvision AlexNet state dict (no matching 'features.*' keys)") from None
    # lpips' slices hold the very modules of torchvision's alexnet().features, keyed by their index there.
    for i in range(1, net.net.N_slices + 1):
        for idx, module in getattr(net.net, f"slice{i}").named_children():
            module.load_state_dict(trunk.features[int(idx)].state_dict())
    info.update(backbone="torchvision alexnet (ImageNet)", backbone_path=str(path.resolve()),
                backbone_sha256=file_sha256(path))
    return net.to(device).eval(), info
