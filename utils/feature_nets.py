"""Networks the metrics run on: FID feature extractors, the Inception-Score classifier, LPIPS.

None of these downloads anything unless the user has network access *and* gave no local file:
every loader takes a local path (flag or environment variable) and, offline without it, raises
``MetricsError`` with one line naming the file to fetch and where to put it.

Feature extractors share clean-fid's calling convention, so one object works both here and as
``cleanfid.fid.compute_fid(custom_feat_extractor=...)``:

    extractor(x) with x float32 N×3×299×299 in [0, 255] (already clean-resized) -> N×dim float32
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
import warnings
from pathlib import Path

import torch
from torch import nn

# clean-fid's Inception (TF 2015-12-05 weights as TorchScript, from StyleGAN2-ADA); clean-fid looks for it in /tmp.
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_DEFAULT_PATH = Path("/tmp/inception-2015-12-05.pt")
INCEPTION_SHA256 = "c2c400999481683c93b7e10c52cb4c5f6850a97267aabb761c69a07f7e16759d"
FID_WEIGHTS_ENV = "FACEGEN_FID_WEIGHTS"

# torchvision's ImageNet classifiers (the only downloads here, and only when no local file is given).
TV_INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
TV_ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_RANDOM = "random"  # --lpips-weights value for a random AlexNet trunk: tests only, never a reportable number


class MetricsError(ValueError):
    """A metrics set-up problem the user must fix; the message is one line."""


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, memoised on (path, size, mtime) because weight files are hashed for every metrics.json."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def tensor_sha256(tensors) -> str:
    """sha256 over tensors' shapes and bytes (identifies a deterministic random net, or a pixel array)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _download(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Fetch to a temporary name, then rename, so an interrupted download never leaves a truncated weight file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# FID feature extractors
# ---------------------------------------------------------------------------------------------

class FeatureExtractor(nn.Module):
    """Base class: ``forward(x)`` maps clean-resized float images in [0, 255] (N×3×S×S) to N×dim features.

    ``name``/``sha256``/``path`` identify the network in metrics.json and in reference-statistics cache keys.
    """

    name: str = ""
    label: str = ""   # the network and layer in words, recorded in every metric entry that uses these features
    dim: int = 0
    input_size: int = 299

    def __init__(self) -> None:
        super().__init__()
        self.sha256 = ""
        self.path: str | None = None

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "dim": self.dim, "input_size": self.input_size,
                "path": self.path, "sha256": self.sha256}

    def features_info(self) -> dict:
        """The fields a metrics.json entry computed on these features carries."""
        return {"features": self.label, "features_name": self.name, "features_sha256": self.sha256 or None}


class InceptionFeatures(FeatureExtractor):
    """clean-fid's 'clean' mode Inception: TorchScript ``layers`` on (x − 128)/128, 2048-d pool3 features.

    Same arithmetic as ``cleanfid.inception_torchscript.InceptionV3W(resize_inside=False)``.
    """

    name = "clean-fid-inception-2015-12-05"
    label = "inception-v3 pool3 (2048-d)"
    dim = 2048

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
            try:
                base = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as e:
                raise MetricsError(f"{path} is not a loadable TorchScript Inception file "
                                   f"({type(e).__name__}); expected clean-fid's inception-2015-12-05.pt") from None
        if not hasattr(base, "layers"):
            raise MetricsError(f"{path} has no '.layers' module; expected clean-fid's inception-2015-12-05.pt")
        self.layers = base.layers
        self.path = str(Path(path).resolve())
        self.sha256 = file_sha256(path)

    def describe(self) -> dict:
        return {**super().describe(), "sha256_matches_clean_fid": self.sha256 == INCEPTION_SHA256}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - 128) / 128).view(x.shape[0], self.dim)


class TinyFeatures(FeatureExtractor):
    """A fixed, seeded random conv net (64-d) for tests and CPU smoke runs.

    Its FIDs are NOT comparable with Inception FIDs; metrics.json records its name so they are never mixed.
    Random conv features still separate image distributions (colour, layout, texture), which is all the
    tests and learning checks need.
    """

    name = "tiny-random-conv-v1"
    label = "tiny random conv (64-d; tests only)"
    dim = 64
    _SEED = 20240531

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 7, stride=4, padding=3), nn.LeakyReLU(0.2),   # 299 -> 75
            nn.Conv2d(16, 32, 5, stride=3, padding=2), nn.LeakyReLU(0.2),  # 75 -> 25
            nn.Conv2d(32, self.dim, 3, stride=2, padding=1), nn.LeakyReLU(0.2),  # 25 -> 13
            nn.AdaptiveAvgPool2d(1),
        )
        g = torch.Generator().manual_seed(self._SEED)
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        self.requires_grad_(False)
        self.eval()
        self.sha256 = tensor_sha256(self.state_dict().values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 128) / 128).flatten(1)


def resolve_inception_path(weights: str | os.PathLike | None = None, *, allow_download: bool = True) -> Path:
    """Local clean-fid Inception file: ``weights`` > $FACEGEN_FID_WEIGHTS > /tmp (clean-fid's own location).

    Without any of them, download to /tmp as clean-fid would; offline, a one-line MetricsError.
    """
    explicit = weights or os.environ.get(FID_WEIGHTS_ENV)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            src = "--fid-weights" if weights else f"${FID_WEIGHTS_ENV}"
            raise MetricsError(f"{src} {p} does not exist; download {INCEPTION_URL} there")
        return p
    if INCEPTION_DEFAULT_PATH.is_file():
        return INCEPTION_DEFAULT_PATH
    hint = (f"no clean-fid Inception weights: download {INCEPTION_URL} to {INCEPTION_DEFAULT_PATH} "
            f"(or pass --fid-weights PATH / set ${FID_WEIGHTS_ENV})")
    if not allow_download:
        raise MetricsError(hint)
    try:
        _download(INCEPTION_URL, INCEPTION_DEFAULT_PATH)
    except OSError as e:
        raise MetricsError(f"{hint}; download failed: {str(e)[:80]}") from None
    return INCEPTION_DEFAULT_PATH


FEATURE_EXTRACTORS = ("inception", "tiny", "dinov2")


def load_feature_extractor(kind: str = "inception", *, weights: str | os.PathLike | None = None,
                           device: str | torch.device = "cpu") -> FeatureExtractor:
    """'inception' (clean-fid's network, for reportable numbers), 'tiny' (seeded random net, tests/CPU) or
    'dinov2' (DINOv2 ViT-L/14 for FD-DINOv2; ``weights`` is then the DINOv2 file, 'tiny', or None: see
    ``load_dinov2_features``)."""
    if kind == "inception":
        net = InceptionFeatures(resolve_inception_path(weights))
    elif kind == "tiny":
        net = TinyFeatures()
    elif kind == "dinov2":
        net = load_dinov2_features(weights)
    else:
        raise MetricsError(f"unknown feature extractor {kind!r}; choose from {', '.join(FEATURE_EXTRACTORS)}")
    return net.to(device).eval()


# ---------------------------------------------------------------------------------------------
# DINOv2 ViT-L/14 features for FD-DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation
# metrics"; Karras et al. 2024, EDM2)
# ---------------------------------------------------------------------------------------------

DINOV2_TIMM_NAME = "vit_large_patch14_dinov2.lvd142m"       # timm's DINOv2 ViT-L/14 (same weights as torch hub)
DINOV2_HF_REPO = "timm/vit_large_patch14_dinov2.lvd142m"
DINOV2_HF_URL = f"https://huggingface.co/{DINOV2_HF_REPO}/resolve/main/model.safetensors"
DINOV2_META_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
DINOV2_WEIGHTS_ENV = "FACEGEN_DINOV2_WEIGHTS"
DINOV2_TINY = "tiny"  # --dinov2-weights value: a seeded random tiny ViT of the same timm class (tests only)
DINOV2_INPUT = 224     # dgm-eval feeds DINOv2 224x224 images
# The tiny test ViT: timm's DINOv2 entry with small widths (patch 14, 518-px native grid, LayerScale, CLS token).
# LayerScale starts at 1 rather than DINOv2's 1e-5: with random weights and 1e-5 the blocks would leave the CLS
# token (nearly) independent of the image, and every FD would be ~0.
DINOV2_TINY_ARGS = {"embed_dim": 32, "depth": 2, "num_heads": 2, "init_values": 1.0}


def _dinov2_hint(src: str) -> str:
    return (f"no DINOv2 ViT-L/14 weights ({src}): download {DINOV2_HF_URL} (or {DINOV2_META_URL}) and pass "
            f"--dinov2-weights PATH or set ${DINOV2_WEIGHTS_ENV}")


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = 0.1) -> torch.Tensor:
    """Position embeddings of a square patch grid resampled to ``grid``×``grid`` exactly as DINOv2's own
    ``DinoVisionTransformer.interpolate_pos_encoding`` does at run time (bicubic with the 'historical kludge'
    scale factor (grid + 0.1) / old grid, no antialiasing), so our 224-px features equal those of the
    torch-hub model dgm-eval uses.  (timm's own resampling antialiases and would change the numbers slightly.)"""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    n_old = patch_pos.shape[1]
    m = int(round(n_old ** 0.5))
    if m * m != n_old:
        raise MetricsError(f"DINOv2 position embedding has {n_old} patch positions, not a square grid")
    if m == grid:
        return pos_embed
    dim = patch_pos.shape[-1]
    scale = float(grid + offset) / m
    x = torch.nn.functional.interpolate(patch_pos.float().reshape(1, m, m, dim).permute(0, 3, 1, 2),
                                        scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if tuple(x.shape[-2:]) != (grid, grid):
        raise MetricsError(f"DINOv2 position-embedding resampling gave {tuple(x.shape[-2:])}, expected {grid}²")
    x = x.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, x], dim=1)


class DINOv2Features(FeatureExtractor):
    """DINOv2 ViT-L/14 (timm ``VisionTransformer``) as dgm-eval uses it for FD-DINOv2: 224² input (clean-resized
    by ``utils.metrics.extract``: PIL bicubic in float mode, i.e. dgm-eval's ``--clean_resize``), ImageNet
    normalisation, and the CLS token of the final LayerNorm output (timm's ``forward`` with ``num_classes=0``:
    ``forward_features`` → norm → token pool; DINOv2's ``x_norm_clstoken``), 1024-d for ViT-L/14.
    """

    input_size = DINOV2_INPUT

    def __init__(self, vit: nn.Module, *, name: str, label: str, path: str | None = None, sha256: str = ""):
        super().__init__()
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        if getattr(vit, "global_pool", "token") != "token" or getattr(vit, "num_classes", 0) != 0:
            raise MetricsError("DINOv2 features need a timm ViT with global_pool='token' and num_classes=0")
        grid = DINOV2_INPUT // vit.patch_embed.patch_size[0]
        new_pos = dinov2_pos_embed(vit.pos_embed.detach(), grid)
        vit.set_input_size(img_size=(DINOV2_INPUT, DINOV2_INPUT))   # patch grid 16x16 (timm resamples; replaced:)
        with torch.no_grad():
            vit.pos_embed = nn.Parameter(new_pos.clone(), requires_grad=False)
        self.vit = vit.eval().requires_grad_(False)
        self.dim = int(vit.num_features)
        self.name, self.label, self.path = name, label, path
        self.sha256 = sha256 or tensor_sha256(v for _, v in sorted(self.vit.state_dict().items()))
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def describe(self) -> dict:
        return {**super().describe(), "library": "timm", "architecture": DINOV2_TIMM_NAME,
                "feature": "final-norm CLS token", "preprocessing": "clean-resize to 224 (PIL bicubic, float), "
                "/255, ImageNet mean/std (dgm-eval --clean_resize)"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x in [0, 255]: (x/255 - mean)/std == (x - 255 mean)/(255 std)
        return self.vit((x - self.mean) / self.std)


def tiny_dinov2_vit(seed: int = 0) -> nn.Module:
    """A randomly initialised tiny ViT of timm's DINOv2 class and config (tests: the FD-DINOv2 code path on CPU)."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(DINOV2_TIMM_NAME, pretrained=False, num_classes=0, **DINOV2_TINY_ARGS)


def resolve_dinov2_path(weights: str | os.PathLike | None = None) -> Path:
    """Local DINOv2 file: ``weights`` > $FACEGEN_DINOV2_WEIGHTS > the Hugging Face hub (its cache, else a
    download when there is internet).  Neither: a one-line MetricsError naming what to download."""
    explicit = weights or os.environ.get(DINOV2_WEIGHTS_ENV)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            src = "--dinov2-weights" if weights else f"${DINOV2_WEIGHTS_ENV}"
            raise MetricsError(_dinov2_hint(f"{src} {p} does not exist"))
        return p
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(DINOV2_HF_REPO, "model.safetensors"))
    except Exception as e:  # offline, proxy, hub outage: all mean "give me a local file"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetricsError(_dinov2_hint(f"hub: {type(e).__name__}: {first[:80]}")) from None


def load_dinov2_features(weights: str | os.PathLike | None = None, *, tiny_args: dict | None = None
                         ) -> DINOv2Features:
    """DINOv2 ViT-L/14 features from timm, weights from a local file (timm's safetensors or Meta's
    dinov2_vitl14_pretrain.pth; timm converts the latter) or the hub.  ``weights='tiny'``: a seeded random tiny
    ViT of the same class (tests only; its name says so).  ``tiny_args`` (tests): architecture overrides, so a
    small weight file goes through the very loading path of the real one."""
    try:
        import timm
    except ImportError:
        raise MetricsError("FD-DINOv2 needs timm: pip install 'timm>=1.0'") from None
    if str(weights) == DINOV2_TINY:
        return DINOv2Features(tiny_dinov2_vit(), name="tiny-random-dinov2-vit",
                              label=f"tiny random ViT, timm DINOv2 class (CLS {DINOV2_TINY_ARGS['embed_dim']}-d; "
                                    "tests only)")
    path = resolve_dinov2_path(weights)
    try:
        vit = timm.create_model(DINOV2_TIMM_NAME, pretrained=True, num_classes=0,
                                pretrained_cfg_overlay={"file": str(path)}, **(tiny_args or {}))
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise MetricsError(f"{path} is not a DINOv2 ViT-L/14 weight file timm can load "
                           f"({type(e).__name__}: {first[:100]}); expected {DINOV2_HF_URL}") from None
    dim = int(vit.num_features)
    return DINOv2Features(vit, name="dinov2-vitl14" if not tiny_args else "dinov2-vit-test",
                          label=f"dinov2 vit-l/14 CLS ({dim}-d)" if not tiny_args else f"dinov2 test vit CLS ({dim}-d)",
                          path=str(path.resolve()), sha256=file_sha256(path))


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
                _download(TV_ALEXNET_URL, path)
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
