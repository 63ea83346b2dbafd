"""Model families and the registry that rebuilds them from an export's config.

Every family module exposes ``build_from_config(model_config: dict) -> nn.Module``.
The returned root module is what ``utils.export.save_export`` stores and what
``evaluate.py`` samples from.  It implements the sampling protocol:

    module.resolution: int
    module.sample(num: int, *, generator: torch.Generator | None = None, **kw) -> Tensor
        # num x 3 x resolution x resolution, values in [-1, 1], on the module's device

Families are imported lazily so that, e.g., evaluating a GAN never imports diffusers.
"""
from __future__ import annotations

import importlib

# family name -> module that defines build_from_config
FAMILIES = {
    "gan": "models.gan",
    "vae": "models.vae",
    "ddpm": "models.ddpm",
    "cyclegan": "models.cyclegan",
    "acgan": "models.acgan",
}
# families whose model translates images between two domains instead of sampling them (evaluate.py --mode translate)
TRANSLATION_FAMILIES = ("cyclegan",)


def known_families() -> list[str]:
    return sorted(FAMILIES)


def build_model(family: str, model_config: dict):
    if family not in FAMILIES:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(known_families())}")
    return importlib.import_module(FAMILIES[family]).build_from_config(dict(model_config))
