"""FID feature extractors (the base class, clean-fid's Inception, a seeded tiny test net) and the helpers every
metrics network shares: the one-line ``MetricsError``, weight-file hashing and atomic downloads.

DINOv2 features live in ``utils.dinov2_features``; the networks of the other metrics (VGG-16 for
precision/recall, the Inception-Score classifier, LPIPS) in ``utils.aux_metric_nets``.

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


def download(url: str, dest: Path, timeout: float = 30.0) -> None:
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
        download(INCEPTION_URL, INCEPTION_DEFAULT_PATH)
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
        from utils.dinov2_features import load_dinov2_features  # that module builds on this one's base class

        net = load_dinov2_features(weights)
    else:
        raise MetricsError(f"unknown feature extractor {kind!r}; choose from {', '.join(FEATURE_EXTRACTORS)}")
    return net.to(device).eval()
