"""VAE networks, KL and reparameterisation, VGG perceptual loss, PatchGAN discriminator (CPU, small nets)."""
from __future__ import annotations

import math
import os
import urllib.error
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import build_model
from models import perceptual as perc
from models.patchgan import (PatchDiscriminator, min_resolution, patchgan_output_size,
                             patchgan_receptive_field)
from models.vae import VAE, VAEConfig, VAEConfigError, build_from_config, kl_divergence, reparameterize


def faces(n: int, res: int) -> torch.Tensor:
    """Smooth test images in [-1, 1] (the synthetic renderer when present, else gradients)."""
    try:
        from utils.synthetic import render_faces
        x = torch.from_numpy(render_faces(range(n), res)).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1
    except ImportError:
        g = torch.linspace(-1, 1, res)
        return torch.stack([torch.stack([g[:, None] * g[None, :] * (i + 1) / n] * 3) for i in range(n)])


# ------------------------------------------------------------------------------------------- KL / reparam

def test_kl_matches_closed_form_for_known_values():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), math.log(0.25)]])
    # Row 1 by hand: ½(1 + 4 − 1 − ln 4) + ½(4 + ¼ − 1 − ln ¼) = ½(4 − ln 4) + ½(3.25 + ln 4) = 3.625
    expected = torch.tensor([0.0, 3.625])
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-6)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(kl_divergence(mu, logvar), ref, atol=1e-5)
    assert torch.all(kl_divergence(mu, logvar) > 0)


def test_reparameterisation_gradients_flow_to_mu_and_logvar():
    mu = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0), -2.0]], requires_grad=True)
    w = torch.tensor([[1.0, 2.0, -3.0]])
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(3))
    eps = torch.randn(1, 3, generator=torch.Generator().manual_seed(3))
    (z * w).sum().backward()
    std = torch.exp(0.5 * logvar.detach())
    assert torch.allclose(z.detach(), mu.detach() + eps * std)
    assert torch.allclose(mu.grad, w)                        # ∂z/∂μ = 1
    assert torch.allclose(logvar.grad, w * eps * 0.5 * std)  # ∂z/∂logσ² = ½·ε·σ


def test_reparameterised_samples_have_the_posterior_moments():
    mu, logvar = torch.full((20000, 2), 1.5), torch.tensor([[math.log(0.25), math.log(9.0)]]).expand(20000, 2)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([1.5, 1.5]), atol=0.05)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 3.0]), rtol=0.03)


def test_vae_backward_reaches_encoder_through_sampling():
    vae = VAE(VAEConfig(resolution=16, latent_dim=8, base_channels=8))
    x = faces(2, 16)
    x_hat, mu, logvar = vae(x)
    (F.mse_loss(x_hat, x) + kl_divergence(mu, logvar).mean()).backward()
    first = vae.encoder.features[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert vae.encoder.to_logvar.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- VAE nets

@pytest.mark.parametrize("res", [16, 32, 64, 128])
def test_vae_shapes_levels_and_no_transposed_convs(res):
    cfg = VAEConfig(resolution=res, latent_dim=16, base_channels=8, max_channels=32)
    vae = VAE(cfg).eval()
    x = faces(2, res)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 16)
    assert vae.decode(mu).shape == (2, 3, res, res)
    assert vae.reconstruct(x).shape == (2, 3, res, res)
    assert cfg.num_levels == int(math.log2(res // 4))
    strided = [m for m in vae.encoder.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    ups = [m for m in vae.decoder.modules() if isinstance(m, nn.Upsample)]
    assert len(strided) == len(ups) == cfg.num_levels
    assert all(u.mode == "nearest" for u in ups)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in vae.modules())


def test_sample_is_bounded_deterministic_and_batch_invariant():
    vae = VAE(VAEConfig(resolution=16, latent_dim=8, base_channels=8)).eval()
    a = vae.sample(6, generator=torch.Generator().manual_seed(1))
    b = vae.sample(6, generator=torch.Generator().manual_seed(1), batch_size=4)
    c = vae.sample(6, generator=torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c)


def test_interpolation_endpoints_are_the_reconstructions():
    vae = VAE(VAEConfig(resolution=16, latent_dim=8, base_channels=8)).eval()
    x = faces(4, 16)
    frames = vae.interpolate(x[:2], x[2:], steps=5)
    assert frames.shape == (2, 5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(frames[:, 0], vae.reconstruct(x[:2]).clamp(-1, 1), atol=1e-5)
        assert torch.allclose(frames[:, -1], vae.reconstruct(x[2:]).clamp(-1, 1), atol=1e-5)


def test_build_from_config_round_trip_through_registry():
    vae = VAE(VAEConfig(resolution=32, latent_dim=12, base_channels=8, norm="group"))
    rebuilt = build_model("vae", asdict(vae.config))
    rebuilt.load_state_dict(vae.state_dict())
    x = faces(2, 32)
    assert torch.equal(rebuilt.eval().reconstruct(x), vae.eval().reconstruct(x))
    assert rebuilt.resolution == 32 and rebuilt.latent_dim == 12


@pytest.mark.parametrize("bad, match", [({"resolution": 48}, "power of two"), ({"norm": "layer"}, "norm"),
                                        ({"latent_dim": 0}, "positive"), ({"depth": 3}, "unknown VAE config")])
def test_bad_configs_raise_one_line_errors(bad, match):
    cfg = {**asdict(VAEConfig(resolution=32)), **bad}
    with pytest.raises(VAEConfigError, match=match) as e:
        build_from_config(cfg)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- perceptual

@pytest.fixture(scope="module")
def random_perceptual():
    torch.manual_seed(0)
    return perc.PerceptualLoss(init="random")


def test_perceptual_is_zero_for_identical_and_grows_with_noise(random_perceptual):
    x = faces(4, 32)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    values = [random_perceptual(x + s * noise, x).item() for s in (0.0, 0.05, 0.2, 0.6)]
    assert values[0] == 0.0
    assert values[1] < values[2] < values[3], values


def test_perceptual_grows_with_blur_and_passes_gradients(random_perceptual):
    x = faces(4, 32)
    blur = [F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) for k in (3, 5, 9)]
    values = [random_perceptual(b, x).item() for b in blur]
    assert 0 < values[0] < values[1] < values[2], values
    y = blur[0].clone().requires_grad_(True)
    random_perceptual(y, x).backward()
    assert y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in random_perceptual.parameters())


def test_perceptual_raw_feature_mode_also_orders_distortions():
    torch.manual_seed(0)
    loss = perc.PerceptualLoss(init="random", normalize="none")
    x = faces(2, 16)
    assert loss(x, x).item() == 0.0
    assert loss(x + 0.05, x).item() < loss(x + 0.3, x).item()


def test_perceptual_loads_torchvision_named_safetensors(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(123)
    src = perc.vgg16_features_to_relu3_3()
    path = tmp_path / "vgg.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = perc.PerceptualLoss(weights_path=str(path))
    assert loaded.source == f"file {path}"
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.features.state_dict()[k], v)
    monkeypatch.setenv(perc.ENV_WEIGHTS, str(path))  # environment fallback when no path is given
    assert perc.PerceptualLoss().source == f"file {path}"


def test_perceptual_rejects_a_state_dict_without_vgg_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(perc.VGGWeightsError, match="lacks VGG-16 feature weights") as e:
        perc.PerceptualLoss(weights_path=str(path))
    assert "\n" not in str(e.value.code)


def test_offline_without_weights_is_a_one_line_error_naming_the_flag(monkeypatch):
    def offline():
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv(perc.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(perc, "_download_imagenet_state", offline)
    with pytest.raises(perc.VGGWeightsError) as e:
        perc.PerceptualLoss()
    msg = str(e.value.code)
    assert "--vgg-weights" in msg and perc.ENV_WEIGHTS in msg and "\n" not in msg


@pytest.mark.skipif(not os.environ.get("FACEGEN_VGG_WEIGHTS"), reason="FACEGEN_VGG_WEIGHTS not set (real VGG weights)")
def test_real_vgg_weights_rank_distortions():
    loss = perc.PerceptualLoss(weights_path=os.environ["FACEGEN_VGG_WEIGHTS"])
    x = faces(4, 32)
    assert loss(x, x).item() == 0.0
    blur3 = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    blur7 = F.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
    assert 0 < loss(blur3, x).item() < loss(blur7, x).item()
    # A trained VGG sees two different faces as farther apart than a face and its mild blur.
    assert loss(blur3, x).item() < loss(x.roll(1, dims=0), x).item()


# ------------------------------------------------------------------------------------------- PatchGAN

@pytest.mark.parametrize("res, side", [(64, 6), (128, 14)])
def test_patchgan_logit_map_shape(res, side):
    d = PatchDiscriminator(ndf=8, n_layers=3)
    out = d(torch.randn(2, 3, res, res))
    assert out.shape == (2, 1, side, side)
    assert patchgan_output_size(res, 3) == side


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("norm, sn", [("batch", False), ("instance", False), ("none", True)])
def test_patchgan_variants_match_predicted_sizes(n_layers, norm, sn):
    d = PatchDiscriminator(in_channels=6, ndf=4, n_layers=n_layers, norm=norm, spectral_norm=sn)
    res = max(32, min_resolution(n_layers))
    side = patchgan_output_size(res, n_layers)
    assert d(torch.randn(2, 6, res, res)).shape == (2, 1, side, side)
    with pytest.raises(ValueError, match="at least"):
        d.check_resolution(min_resolution(n_layers) - 1)


def test_patchgan_receptive_field_is_70_pixels():
    """Back-propagate one central logit to the input: the pixels it depends on span 70×70 (pix2pix)."""
    assert patchgan_receptive_field(3) == 70
    d = PatchDiscriminator(ndf=4, n_layers=3, norm="none")
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    out = d(x)
    c = out.shape[-1] // 2
    out[0, 0, c, c].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)) > 0).flatten()
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0).flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
