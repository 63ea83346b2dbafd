"""GAN nets, losses, gradient penalty, spectral norm, attention and DiffAugment (in-process, CPU, small)."""
from __future__ import annotations

import itertools
from dataclasses import asdict
from types import MethodType

import pytest
import torch
from torch import nn

from models import build_model
from models.gan import (D_NORMS, G_NORMS, GANConfig, GANConfigError, build_critic, build_from_config,
                        build_generator)
from models.layers import UPSAMPLE_MODES, SelfAttention, apply_spectral_norm, norm_layer, up_conv
from models.losses import LOSSES, clip_weights_, critic_metric, gradient_penalty
from utils.diffaug import DiffAugment, DiffAugmentError, cutout, parse_policy, translation

RESOLUTIONS = (16, 32, 64, 128)


def tiny(**kw) -> GANConfig:
    base = dict(ngf=4, ndf=4, latent_dim=8)
    return GANConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------ shapes

def test_shapes_every_loss_norm_upsample_resolution():
    """G: N×latent → N×3×R×R in [-1, 1]; D: → N scores; every loss gives a finite scalar on them."""
    torch.manual_seed(0)
    checked = 0
    for res, up, g_norm in itertools.product(RESOLUTIONS, UPSAMPLE_MODES, G_NORMS):
        G = build_generator(tiny(resolution=res, upsample=up, g_norm=g_norm))
        fake = G(torch.randn(3, 8))
        assert fake.shape == (3, 3, res, res)
        assert fake.abs().max() <= 1.0
        for d_norm in D_NORMS:
            D = build_critic(tiny(resolution=res, d_norm=d_norm))
            s_fake, s_real = D(fake), D(torch.rand(3, 3, res, res) * 2 - 1)
            assert s_fake.shape == (3,) and s_real.shape == (3,)
            for name, loss in LOSSES.items():
                if name == "wgan-gp" and d_norm == "batch":
                    continue  # rejected by the trainer's flag check (tested in test_train_gan.py)
                d_loss, g_loss = loss.d_loss(s_real, s_fake, 0.0), loss.g_loss(s_fake)
                assert d_loss.shape == () and g_loss.shape == ()
                assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
                checked += 1
    assert checked == len(RESOLUTIONS) * len(UPSAMPLE_MODES) * len(G_NORMS) * (len(D_NORMS) * len(LOSSES) - 1)


@pytest.mark.parametrize("res,attn", [(32, [16]), (64, [16]), (128, [16, 32])])
def test_attention_and_spectral_norm_variants(res, attn):
    cfg = tiny(resolution=res, attn_res=attn, spectral_norm=True, d_norm="none", g_norm="group", upsample="nearest")
    G, D = build_generator(cfg), build_critic(cfg)
    n_attn_g = sum(isinstance(m, SelfAttention) for m in G.modules())
    n_attn_d = sum(isinstance(m, SelfAttention) for m in D.modules())
    assert n_attn_g == n_attn_d == len(attn)
    # The attention block sits on the feature map of the named size.
    sizes = []
    for m in G.modules():
        if isinstance(m, SelfAttention):
            m.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape[-1]))
    x = G(torch.randn(2, 8))
    assert sorted(sizes) == sorted(attn)
    assert D(x).shape == (2,)


def test_dcgan_64_matches_the_paper_layout():
    G, D = build_generator(GANConfig()), build_critic(GANConfig())
    widths_g = [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    widths_d = [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert G.project.out_features == 512 * 16 and widths_g == [256, 128, 64, 3]
    assert widths_d == [64, 128, 256, 512, 1]
    assert 3.5e6 < sum(p.numel() for p in G.parameters()) < 3.7e6   # ≈3.6M, as the reference DCGAN


def test_bad_configs_are_one_line_errors():
    with pytest.raises(GANConfigError, match="power of two"):
        build_generator(tiny(resolution=48))
    with pytest.raises(GANConfigError, match="g_norm"):
        build_generator(tiny(g_norm="instance"))
    with pytest.raises(GANConfigError, match="unknown GAN config keys"):
        build_from_config({**asdict(tiny()), "bogus": 1})


# ------------------------------------------------------------------------------------------ sampling protocol

def test_sample_protocol_and_config_round_trip():
    cfg = tiny(resolution=32, attn_res=[16], g_norm="group", upsample="bilinear")
    torch.manual_seed(1)
    G = build_generator(cfg).eval()
    H = build_model("gan", asdict(cfg)).eval()   # the registry path load_export uses
    H.load_state_dict(G.state_dict())
    assert (G.resolution, G.latent_dim) == (32, 8)
    a = G.sample(5, generator=torch.Generator().manual_seed(3))
    b = H.sample(5, generator=torch.Generator().manual_seed(3), batch_size=2)   # other batching, same images
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 32, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, G(z))          # sample() draws z ~ N(0, I) from the given generator
    assert not torch.equal(a, G.sample(5, generator=torch.Generator().manual_seed(4)))


# ------------------------------------------------------------------------------------------ gradient penalty

def test_gradient_penalty_linear_critic_matches_closed_form():
    """D(x) = <w, x> has ∇D = w everywhere, so the penalty is λ(‖w‖ − 1)² for any interpolation."""
    torch.manual_seed(0)
    w = torch.randn(3, 8, 8) * 0.2
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    for lam in (1.0, 10.0):
        gp, norm = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake, weight=lam)
        expected = lam * (w.norm() - 1) ** 2
        torch.testing.assert_close(gp, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(norm, w.norm(), rtol=1e-5, atol=1e-6)


def test_gradient_penalty_quadratic_critic_uses_the_interpolate():
    """D(x) = ½‖x‖²: ∇D(x̂) = x̂ = αx + (1 − α)y, so the penalty is λ·mean((‖x̂‖ − 1)²) and it is differentiable."""
    torch.manual_seed(0)
    real, fake = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    alpha = torch.tensor([0.0, 0.25, 1.0]).view(3, 1, 1, 1)
    scale = torch.ones((), requires_grad=True)
    gp, _ = gradient_penalty(lambda x: 0.5 * scale * x.flatten(1).pow(2).sum(1), real, fake, weight=10.0, alpha=alpha)
    x_hat = alpha * real + (1 - alpha) * fake
    expected = 10.0 * ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gp, expected)
    (grad,) = torch.autograd.grad(gp, scale)   # create_graph=True: the penalty trains the critic's parameters
    n = x_hat.flatten(1).norm(dim=1)
    torch.testing.assert_close(grad, (10.0 * 2 * (n - 1) * n).mean())


def test_critic_fp32_path_escapes_an_autocast_wrapped_forward():
    """Accelerate wraps a prepared model's forward in autocast; fp32=True must still compute in float32."""
    torch.manual_seed(0)
    D = build_critic(tiny(resolution=16, d_norm="layer")).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = D(x)
    D.forward = MethodType(torch.autocast("cpu", dtype=torch.bfloat16)(type(D).forward), D)  # as prepare() does
    seen = []
    D.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    low, full = D(x), D(x, fp32=True)
    assert seen == [torch.bfloat16, torch.float32]
    torch.testing.assert_close(full, ref)
    assert not torch.equal(low.float(), ref)
    gp, _ = gradient_penalty(lambda t: D(t, fp32=True), x, torch.randn_like(x))
    assert gp.dtype == torch.float32 and torch.isfinite(gp)


# ------------------------------------------------------------------------------------------ spectral norm

def test_spectral_norm_brings_top_singular_value_to_one():
    torch.manual_seed(0)
    D = build_critic(tiny(resolution=32, ndf=8, spectral_norm=True, d_norm="none", attn_res=[16]))
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 + 3  # 3 strided convs + head, and q/k/v of the attention block
    D(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        for _ in range(200):         # each weight access in training mode runs one power iteration
            [m.weight for m in convs]
    D.eval()
    for w in (m.weight for m in convs):
        sigma = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.02, sigma
    raw = [m.parametrizations.weight.original for m in D.modules() if hasattr(m, "parametrizations")]
    assert max(torch.linalg.matrix_norm(w.detach().flatten(1), ord=2).item() for w in raw) > 1.05 or \
        min(torch.linalg.matrix_norm(w.detach().flatten(1), ord=2).item() for w in raw) < 0.95


def test_apply_spectral_norm_on_linear():
    torch.manual_seed(0)
    lin = apply_spectral_norm(nn.Linear(6, 5))
    with torch.no_grad():
        for _ in range(200):
            lin.weight
    lin.eval()
    assert abs(torch.linalg.matrix_norm(lin.weight.detach(), ord=2).item() - 1) < 1e-3


# ------------------------------------------------------------------------------------------ attention

def test_self_attention_identity_at_gamma_zero_and_not_otherwise():
    torch.manual_seed(0)
    attn = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(attn(x), x)
    with torch.no_grad():
        attn.gamma.fill_(0.5)
    y = attn(x)
    assert y.shape == x.shape and (y - x).abs().mean() > 1e-3
    # Attention mixes positions: changing one pixel changes the output elsewhere (a 1×1 conv could not).
    x2 = x.clone()
    x2[:, :, 0, 0] += 5.0
    assert not torch.allclose(attn(x2)[:, :, 7, 7], y[:, :, 7, 7])


# ------------------------------------------------------------------------------------------ losses

def test_losses_on_known_scores():
    big = torch.full((4,), 20.0)
    assert LOSSES["bce"].d_loss(big, -big).item() < 1e-6            # perfect discriminator
    torch.testing.assert_close(LOSSES["bce"].g_loss(torch.zeros(4)), torch.log(torch.tensor(2.0)))
    torch.testing.assert_close(LOSSES["bce"].d_loss(big, -big, 0.1),  # smoothed target 0.9 on a confident logit
                               torch.nn.functional.binary_cross_entropy_with_logits(big, torch.full((4,), 0.9)))
    torch.testing.assert_close(LOSSES["lsgan"].d_loss(torch.ones(4), torch.zeros(4)), torch.tensor(0.0))
    torch.testing.assert_close(LOSSES["lsgan"].g_loss(torch.zeros(4)), torch.tensor(0.5))
    torch.testing.assert_close(LOSSES["hinge"].d_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])),
                               torch.tensor(0.5 + 0.75))
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.0, -2.0])
    torch.testing.assert_close(LOSSES["wgan-gp"].d_loss(real, fake), torch.tensor(-3.0))
    assert critic_metric(LOSSES["wgan-clip"], real, fake) == ("w_dist", torch.tensor(3.0))
    name, acc = critic_metric(LOSSES["bce"], torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -2.0]))
    assert name == "d_acc" and acc.item() == 0.75
    assert critic_metric(LOSSES["lsgan"], torch.tensor([0.6]), torch.tensor([0.4]))[1].item() == 1.0


def test_weight_clipping():
    D = build_critic(tiny(resolution=16, d_norm="none"))
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(100)
    clip_weights_(D, 0.01)
    assert max(p.abs().max().item() for p in D.parameters()) <= 0.01


# ------------------------------------------------------------------------------------------ layers

def test_norm_and_upsample_factories():
    assert isinstance(norm_layer("layer", 8), nn.GroupNorm) and norm_layer("layer", 8).num_groups == 1
    assert norm_layer("group", 48).num_groups == 16
    with pytest.raises(ValueError, match="unknown normalisation"):
        norm_layer("weird", 8)
    for mode in UPSAMPLE_MODES:
        assert up_conv(mode, 4, 2)(torch.randn(1, 4, 5, 5)).shape == (1, 2, 10, 10)


# ------------------------------------------------------------------------------------------ DiffAugment

def test_diffaug_policy_parsing():
    assert parse_policy("cutout, color") == ("color", "cutout")
    assert parse_policy("") == () and parse_policy("none") == ()
    with pytest.raises(DiffAugmentError, match="unknown DiffAugment policy"):
        parse_policy("color,blur")
    x = torch.randn(2, 3, 8, 8)
    assert DiffAugment("")(x) is x


def test_diffaug_is_differentiable_seeded_and_changes_images():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    aug = DiffAugment("color,translation,cutout")
    a = aug(x, generator=torch.Generator().manual_seed(0))
    b = aug(x, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, aug(x, generator=torch.Generator().manual_seed(1)))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _shift_zero_fill(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = img[i + dy, j + dx], 0 outside."""
    h, w = img.shape[-2:]
    padded = torch.nn.functional.pad(img, [1, 1, 1, 1])
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def test_translation_shifts_with_zero_fill_and_cutout_masks_a_quarter():
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8).repeat(50, 3, 1, 1)   # distinct, non-zero pixels
    g = torch.Generator().manual_seed(0)
    shifts = set()
    for img in translation(x, generator=g):           # ratio 1/8 of 8 px: shifts of at most one pixel
        match = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if torch.equal(img, _shift_zero_fill(x[0], dy, dx))]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 5                              # the shift is drawn per image
    c = cutout(torch.ones(400, 3, 16, 16), generator=g)
    zero_frac = (c[:, 0] == 0).float().mean().item()
    assert 0.15 < zero_frac < 0.25                      # an 8×8 square (¼ of the image), partly off the edge
    assert torch.equal(c[:, 0], c[:, 2])                # the same mask on every channel
