"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks").

Two generators G_xy: X→Y and G_yx: Y→X, two discriminators D_x and D_y.  The generator follows docs/plan.md, s001
(CMU 16-726 assignment 3, "CycleGenerator"): a strided-conv encoder, a few residual blocks at 1/4 resolution
and an upsample(nearest)+conv decoder instead of transposed convolutions (which avoids checkerboard
artefacts, Odena et al. 2016).  It is much smaller than the paper's 9-block ResNet generator.
Discriminators: ``patch`` (PatchGAN, Isola et al. 2017, models/patchgan.py: a grid of real/fake logits, one per
receptive field) or ``dc`` (the DCGAN critic of models/gan.py: one global logit per image), both with instance
norm as in the CycleGAN paper.

The exported root module is ``CycleGAN`` (both generators; the trainer exports its EMA).  It implements
``translate(x, direction)``; ``sample`` raises, because a translator has no unconditional sampler.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.gan import DCGANCritic, GANConfig
from models.layers import check_config_keys, dcgan_init_, norm_layer, up_conv
from models.patchgan import PatchDiscriminator

DISCRIMINATORS = ("patch", "dc")
DIRECTIONS = ("xy", "yx")
# direction -> (source domain, target domain), as indices into the (X, Y) pair of utils.attributes.load_domains
DIRECTION_DOMAINS = {"xy": (0, 1), "yx": (1, 0)}


@dataclass
class CycleGANConfig:
    resolution: int = 64
    gen_width: int = 64        # channels after the first encoder conv (doubles once per downsampling)
    gen_blocks: int = 3        # residual blocks at 1/4 resolution (the paper: 6 at 128 px, 9 at 256 px)
    disc: str = "patch"        # patch | dc
    disc_width: int = 64       # channels of the first discriminator conv (doubles per downsampling, capped 8x)

    def __post_init__(self):
        if self.resolution < 16 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 16, got {self.resolution}")
        if self.disc not in DISCRIMINATORS:
            raise ValueError(f"disc must be one of {DISCRIMINATORS}, got {self.disc!r}")
        if min(self.gen_width, self.disc_width) < 1 or self.gen_blocks < 0:
            raise ValueError("gen_width and disc_width must be >= 1 and gen_blocks >= 0")


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect", bias=False), norm_layer("instance", ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect", bias=False), norm_layer("instance", ch))

    def forward(self, x):
        return x + self.body(x)


class Generator(nn.Module):
    """x (N×3×R×R in [-1, 1]) → translated image of the same size, tanh output.

    7×7 conv → two stride-2 4×4 convs (R/4, 4·width channels) → residual blocks → two nearest-upsample +
    3×3 convs → 7×7 conv to RGB.  Reflection padding at the 7×7 and residual convs, as in the CycleGAN generator.
    """

    def __init__(self, width: int = 64, blocks: int = 3):
        super().__init__()
        w = width

        def act(ch):
            return [norm_layer("instance", ch), nn.ReLU(inplace=True)]

        # Convs followed by a norm have no bias: the norm removes it (and Adam would turn its zero gradient's
        # rounding noise into full-size random steps).
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 7, padding=3, padding_mode="reflect", bias=False), *act(w),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False), *act(2 * w),
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1, bias=False), *act(4 * w),
            *[ResidualBlock(4 * w) for _ in range(blocks)],
            up_conv("nearest", 4 * w, 2 * w, bias=False), *act(2 * w),
            up_conv("nearest", 2 * w, w, bias=False), *act(w),
            nn.Conv2d(w, 3, 7, padding=3, padding_mode="reflect"), nn.Tanh())
        dcgan_init_(self)  # N(0, 0.02), the CycleGAN reference implementation's init

    def forward(self, x):
        return self.net(x)


def patch_layers(resolution: int) -> int:
    """Stride-2 layers of the PatchGAN: 3 (the 70×70 PatchGAN) from 32 px up, 2 at 16 px so the logit map is 2×2."""
    return min(3, int(math.log2(resolution)) - 2)


def build_discriminator(cfg: CycleGANConfig) -> nn.Module:
    """PatchGAN (models/patchgan.py) or the DCGAN critic (models/gan.py), both with instance norm as in CycleGAN."""
    if cfg.disc == "patch":
        return PatchDiscriminator(3, ndf=cfg.disc_width, n_layers=patch_layers(cfg.resolution), norm="instance")
    return DCGANCritic(GANConfig(resolution=cfg.resolution, ndf=cfg.disc_width, d_norm="instance"))


class CycleGAN(nn.Module):
    """The exported translator: both generators.  Discriminators are training-only and not part of it."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.config = cfg
        self.resolution = cfg.resolution
        self.G_xy = Generator(cfg.gen_width, cfg.gen_blocks)
        self.G_yx = Generator(cfg.gen_width, cfg.gen_blocks)

    def generator(self, direction: str) -> Generator:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        return self.G_xy if direction == "xy" else self.G_yx

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "xy", *, batch_size: int = 256) -> torch.Tensor:
        """Translate N×3×R×R images in [-1, 1]: X→Y for 'xy', Y→X for 'yx'.

        Returns float32 N×3×R×R in [-1, 1] on the module's device.  Runs in chunks of ``batch_size``; instance
        norm is per-sample, so chunking does not change the result.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W images, got shape {tuple(x.shape)}")
        g = self.generator(direction)
        p = next(g.parameters())
        return torch.cat([g(chunk.to(p.device, p.dtype)) for chunk in x.split(batch_size)]).float()

    def sample(self, num: int, *, generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        raise NotImplementedError("a CycleGAN export translates images and has no unconditional sampler; use "
                                  "translate(x, direction='xy'|'yx') or "
                                  "`python evaluate.py --ckpt EXPORT --mode translate`")


def build_from_config(model_config: dict) -> CycleGAN:
    check_config_keys(CycleGANConfig, model_config, ValueError, "CycleGAN")
    return CycleGAN(CycleGANConfig(**model_config))


def config_dict(cfg: CycleGANConfig) -> dict:
    return asdict(cfg)


# ---------------------------------------------------------------------------------------------
# Losses and the image pool (used by train_cyclegan.py; here so tests can check them in isolation).
# The GAN terms are written with explicit targets rather than taken from models/losses.py because the
# reference CycleGAN weights them differently: the generator's LSGAN term is the plain mean squared error
# (losses.lsgan_g halves it, which would double the relative cycle weight) and only D's objective is halved.
# ---------------------------------------------------------------------------------------------

def lsgan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN (Mao et al. 2017), the CycleGAN paper's choice: mean (D(x) − target)², target 1 or 0."""
    return (logits.float() - (1.0 if real else 0.0)).pow(2).mean()


def bce_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Original GAN loss with non-saturating generator targets (Goodfellow et al. 2014)."""
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


GAN_LOSSES = {"lsgan": lsgan_loss, "bce": bce_loss}


def cycle_loss(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Cycle-consistency term ‖G_yx(G_xy(x)) − x‖₁ (mean over pixels), Zhu et al. 2017 eq. 2."""
    return (x_rec.float() - x.float()).abs().mean()


def identity_loss(y: torch.Tensor, g_of_y: torch.Tensor) -> torch.Tensor:
    """Identity term ‖G_xy(y) − y‖₁ (Taigman et al. 2017; CycleGAN §5.2): preserves colour composition."""
    return (g_of_y.float() - y.float()).abs().mean()


class ImagePool:
    """History of generated images for discriminator updates (Shrivastava et al. 2017; CycleGAN §4, size 50).

    Until ``size`` images are stored every query passes through unchanged (and is stored).  Once full, each
    image is, with probability 1/2, swapped for a uniformly chosen stored one (which it replaces), else
    returned as is.  Images are processed in order, exactly as the reference implementation does, but the
    random decisions are drawn on the CPU and applied with two gathers, so a query costs no device sync.
    Randomness comes from ``generator`` (default: torch's global CPU RNG, which resume checkpoints restore).
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size, self.generator = size, generator
        self.images: torch.Tensor | None = None  # size×C×H×W, float32
        self.count = 0

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach().float()
        if self.size == 0:
            return images
        if self.images is None or self.images.shape[1:] != images.shape[1:] or self.images.device != images.device:
            self._allocate(images.shape[1:], images.device)
        n = images.shape[0]
        coins = torch.rand(n, generator=self.generator).tolist()
        slots = torch.randint(self.size, (n,), generator=self.generator).tolist()
        # Sources are indices into cat([pool, images]): pool slot s → s, new image i → size + i.
        content = list(range(self.size))
        out = []
        for i in range(n):
            new = self.size + i
            if self.count < self.size:
                content[self.count] = new
                self.count += 1
                out.append(new)
            elif coins[i] < 0.5:
                out.append(content[slots[i]])
                content[slots[i]] = new
            else:
                out.append(new)
        both = torch.cat([self.images, images])
        idx = torch.tensor(out + content, dtype=torch.long).to(images.device, non_blocking=True)
        picked = both.index_select(0, idx)
        self.images = picked[n:].clone()
        return picked[:n]

    def _allocate(self, shape, device) -> None:
        self.images = torch.zeros(self.size, *shape, device=device)
        self.count = 0

    def state(self, shape, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(images size×C×H×W, count 1-element long tensor), allocating an empty pool of ``shape`` if needed."""
        if self.images is None:
            self._allocate(shape, device)
        return self.images, torch.tensor([self.count], device=device)

    def load(self, images: torch.Tensor, count: int) -> None:
        self.images, self.count = images.detach().float().clone(), int(count)


def generator_losses(G_xy, G_yx, D_x, D_y, x: torch.Tensor, y: torch.Tensor, *, gan_loss: str = "lsgan",
                     cycle_weight: float = 10.0, identity_weight: float = 0.0):
    """The generators' objective (Zhu et al. 2017 eq. 3, plus the optional identity term of §5.2).

    Returns (total, parts, fake_y, fake_x).  ``parts`` holds each unweighted term ('cycle' and 'identity' are sums
    over both directions, as in eq. 2); a term whose weight is 0 is neither computed nor listed, so
    ``--cycle-weight 0`` trains the two GANs independently.  Images that go
    through the same network are batched into one call (instance norm is per-sample, so this is exact).
    """
    gan = GAN_LOSSES[gan_loss]
    n = x.shape[0]
    with_id = identity_weight > 0
    out_y = G_xy(torch.cat([x, y]) if with_id else x)
    out_x = G_yx(torch.cat([y, x]) if with_id else y)
    fake_y, fake_x = out_y[:n], out_x[:n]
    parts = {"adv_xy": gan(D_y(fake_y), True), "adv_yx": gan(D_x(fake_x), True)}
    total = parts["adv_xy"] + parts["adv_yx"]
    if cycle_weight > 0:
        parts["cycle"] = cycle_loss(x, G_yx(fake_y)) + cycle_loss(y, G_xy(fake_x))
        total = total + cycle_weight * parts["cycle"]
    if with_id:
        parts["identity"] = identity_loss(y, out_y[n:]) + identity_loss(x, out_x[n:])
        total = total + identity_weight * parts["identity"]
    return total, parts, fake_y, fake_x


def discriminator_loss(D, real: torch.Tensor, fake: torch.Tensor, gan_loss: str = "lsgan") -> torch.Tensor:
    """½·(loss on real + loss on fake); the paper halves D's objective to slow it relative to G (§4)."""
    gan = GAN_LOSSES[gan_loss]
    logits = D(torch.cat([real, fake.to(real.dtype)]))
    n = real.shape[0]
    return 0.5 * (gan(logits[:n], True) + gan(logits[n:], False))
