"""DINOv2 ViT-L/14 features for FD-DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation
metrics"; Karras et al. 2024, EDM2), computed as dgm-eval computes them; timm is imported only when used.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from utils.feature_nets import FeatureExtractor, MetricsError, file_sha256, tensor_sha256

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
    by ``utils.features.extract``: PIL bicubic in float mode, i.e. dgm-eval's ``--clean_resize``), ImageNet
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
