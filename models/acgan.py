"""ACGAN (Odena et al. 2017): a class-conditional generator and a two-headed discriminator.

``train_gan.py --cond-attr ATTR`` builds these.  The config is ``GANConfig`` plus the classes, so every architecture
option of train_gan.py (resolution, norms, upsampling, spectral norm, SAGAN attention, ``stylegan-lite``) applies:

* generator: the class label is embedded and either concatenated to z (``embed="concat"``, Odena et al.'s
  one-hot-style input) or multiplied into it (``embed="multiply"``, the common PyTorch ACGAN variant); the result
  goes through the unconditional generator of ``arch`` (models/gan.py).
* discriminator: the DCGAN critic trunk, its real/fake head, and an auxiliary 4×4 class head (class logits).

The exported root module is the generator (``ACGANGenerator``): ``sample(num, generator=None, labels=None)``
draws z first, then uses ``labels`` or, when None, balanced classes (0, 1, …, C−1, 0, 1, …).  Exports written
before the config gained GANConfig's fields (train_acgan.py) load unchanged: the new fields take their defaults.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from models.gan import GANConfig, GANConfigError, build_critic, build_generator
from models.layers import check_config_keys

EMBEDS = ("concat", "multiply")


class ACGANConfigError(GANConfigError):
    """An ACGAN config that cannot be built; the message is one line."""


@dataclass
class ACGANConfig(GANConfig):
    num_classes: int = 2
    class_names: list[str] = field(default_factory=lambda: ["not_Smiling", "Smiling"])
    attr: str = "Smiling"            # the attribute the classes come from (class 0: −1, class 1: +1)
    embed: str = "concat"            # concat | multiply
    embed_dim: int = 16              # label-embedding size for concat (multiply uses latent_dim)

    def validate(self) -> "ACGANConfig":
        if self.embed not in EMBEDS:
            raise ACGANConfigError(f"embed must be one of {', '.join(EMBEDS)}, got {self.embed!r}")
        if self.num_classes < 2 or len(self.class_names) != self.num_classes:
            raise ACGANConfigError(f"need ≥ 2 classes with one name each, got {self.num_classes} and {self.class_names}")
        if self.embed_dim <= 0:
            raise ACGANConfigError(f"embed_dim must be positive, got {self.embed_dim}")
        super().validate()   # resolution / arch / norms / widths
        return self

    def gan_config(self, which: str) -> GANConfig:
        """The unconditional config of the generator (z input widened for concat) or of the discriminator trunk."""
        base = {f.name: getattr(self, f.name) for f in fields(GANConfig)}
        if which == "g" and self.embed == "concat":
            base["latent_dim"] = self.latent_dim + self.embed_dim
        return GANConfig(**base).validate()

    @classmethod
    def from_dict(cls, d: dict) -> "ACGANConfig":
        check_config_keys(cls, d, ACGANConfigError, "ACGAN")
        return super().from_dict({**d, "class_names": list(d.get("class_names", cls().class_names))})


class ACGANGenerator(nn.Module):
    def __init__(self, cfg: ACGANConfig):
        super().__init__()
        self.config = cfg
        self.resolution, self.latent_dim, self.num_classes = cfg.resolution, cfg.latent_dim, cfg.num_classes
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim if cfg.embed == "concat" else cfg.latent_dim)
        self.net = build_generator(cfg.gan_config("g"))

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = self.embed(labels)
        h = torch.cat([z.flatten(1), e], 1) if self.config.embed == "concat" else z.flatten(1) * e
        return self.net(h)

    def balanced_labels(self, num: int) -> torch.Tensor:
        return torch.arange(num) % self.num_classes

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, batch_size: int = 256,
               z: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``num`` images of classes ``labels`` (default balanced), z ~ N(0, I) drawn on the generator's device."""
        if z is None:
            z = torch.randn(num, self.latent_dim, generator=generator,
                            device=generator.device if generator is not None else "cpu")
        labels = self.balanced_labels(num) if labels is None else torch.as_tensor(labels).long()
        if len(labels) != len(z):
            raise ACGANConfigError(f"{len(labels)} labels for {len(z)} samples")
        out = [self(zc.to(self.device), lc.to(self.device)) for zc, lc in zip(z.split(batch_size), labels.split(batch_size))]
        return torch.cat(out).float()


class ACGANDiscriminator(nn.Module):
    """DCGAN critic trunk → (real/fake score N, class logits N×C)."""

    def __init__(self, cfg: ACGANConfig):
        super().__init__()
        self.critic = build_critic(cfg.gan_config("d"))
        width = self.critic.head.in_channels
        self.class_head = nn.Conv2d(width, cfg.num_classes, 4, stride=1, padding=0)
        if cfg.spectral_norm:
            self.class_head = nn.utils.parametrizations.spectral_norm(self.class_head)

    def forward(self, x: torch.Tensor, *, fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if fp32:   # as DCGANCritic: the gradient penalty needs float32 even inside Accelerate's autocast
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._heads(x.float())
        return self._heads(x)

    def _heads(self, x):
        h = self.critic.blocks(x)
        return self.critic.head(h).flatten(), self.class_head(h).flatten(1)


def build_from_config(model_config: dict) -> ACGANGenerator:
    """Rebuild the exported generator (``models.build_model('acgan', ...)``)."""
    return ACGANGenerator(ACGANConfig.from_dict(dict(model_config)))


def config_dict(cfg: ACGANConfig) -> dict:
    return asdict(cfg)


__all__ = ["ACGANConfig", "ACGANConfigError", "ACGANGenerator", "ACGANDiscriminator", "EMBEDS", "build_from_config",
           "config_dict"]
