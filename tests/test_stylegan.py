"""StyleGAN-lite: AdaIN and demodulation statistics, shapes, w_avg/truncation, config checks, Z vs W paths, and
a few training steps through `accelerate launch train_gan.py --arch stylegan-lite` whose export load_export rebuilds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import explore_latent as E
from models.gan import GANConfig, GANConfigError, build_critic, build_generator
from models.stylegan import StyleGANGenerator, adain, modulated_conv2d
from utils.export import load_export

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(resolution=16, **kw) -> GANConfig:
    base = dict(arch="stylegan-lite", resolution=resolution, latent_dim=8, ngf=4, ndf=4, upsample="nearest")
    return GANConfig(**{**base, **kw}).validate()


def test_adain_output_statistics_are_the_style():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, 8, generator=g) * 4 + 2
    scale, bias = torch.rand(3, 5, generator=g) + 0.5, torch.randn(3, 5, generator=g)
    y = adain(x, scale, bias)
    assert torch.allclose(y.mean(dim=(2, 3)), bias, atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3), unbiased=False), scale, atol=1e-4)


def test_demodulation_gives_unit_variance_per_output_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 48, 48, generator=g)
    weight = torch.randn(6, 16, 3, 3, generator=g) * torch.linspace(0.1, 5, 6).view(6, 1, 1, 1)   # very unequal
    style = torch.rand(2, 16, generator=g) * 3 + 0.1
    out = modulated_conv2d(x, weight, style, demodulate=True)[:, :, 1:-1, 1:-1]   # skip the zero-padded border
    var = out.var(dim=(2, 3))
    assert torch.allclose(var, torch.ones_like(var), atol=0.12), var
    raw = modulated_conv2d(x, weight, style, demodulate=False)[:, :, 1:-1, 1:-1].var(dim=(2, 3))
    assert raw.max() > 10 * raw.min()                                  # without demodulation: far from unit


def test_modulated_conv_equals_per_sample_scaled_conv():
    g = torch.Generator().manual_seed(1)
    x, weight, style = torch.randn(2, 3, 6, 6, generator=g), torch.randn(4, 3, 3, 3, generator=g), torch.rand(2, 3, generator=g)
    out = modulated_conv2d(x, weight, style, demodulate=False)
    ref = torch.stack([torch.nn.functional.conv2d(x[i:i + 1], weight * style[i].view(1, 3, 1, 1), padding=1)[0]
                       for i in range(2)])
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["adain", "modulated"])
@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shapes_and_critic(resolution, mode):
    cfg = tiny(resolution, style_mode=mode, noise=True)
    G, D = build_generator(cfg), build_critic(cfg)
    assert isinstance(G, StyleGANGenerator) and G.resolution == resolution and G.latent_dim == 8
    z = torch.randn(2, 8)
    w = G.mapping(z)
    assert w.shape == (2, 8)
    x = G.synthesis(w)
    assert x.shape == (2, 3, resolution, resolution) and x.abs().max() <= 1
    assert D(x).shape == (2,)


def test_w_avg_tracks_training_and_truncation_zero_collapses_to_it():
    G = build_generator(tiny())
    assert float(G.w_avg.abs().sum()) == 0.0
    G.train()
    w = G.mapping(torch.randn(64, 8))
    assert torch.allclose(G.w_avg, 0.005 * w.mean(0), atol=1e-6)     # one step of lerp with β = 0.995
    G.eval()
    before = G.w_avg.clone()
    g = torch.Generator().manual_seed(0)
    imgs = G.sample(4, generator=g, truncation=0.0)
    assert torch.equal(G.w_avg, before)                                # sampling never moves it
    assert torch.allclose(imgs, imgs[:1].expand_as(imgs), atol=1e-6)   # ψ = 0: every z → w_avg
    a = G.sample(4, generator=torch.Generator().manual_seed(3), batch_size=3)
    b = G.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a[0], a[1], atol=1e-3)   # batching: float noise only


def test_noise_inputs_are_seeded_by_the_sampling_generator():
    G = build_generator(tiny(noise=True)).eval()
    for layer in G.layers:
        layer.noise.strength.data.fill_(0.5)
    a = G.sample(2, generator=torch.Generator().manual_seed(0))
    b = G.sample(2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    z = torch.randn(2, 8)
    assert not torch.allclose(G.sample(2, z=z), G.sample(2, z=z))   # noise differs between unseeded calls


def test_config_rejects_transposed_upsampling_and_bad_mode():
    with pytest.raises(GANConfigError, match="upsamples by resizing"):
        GANConfig(arch="stylegan-lite", upsample="transposed").validate()
    with pytest.raises(GANConfigError, match="style_mode"):
        GANConfig(arch="stylegan-lite", upsample="bilinear", style_mode="mixing").validate()


def test_z_and_w_interpolation_share_endpoints_but_not_paths():
    torch.manual_seed(0)
    G = build_generator(tiny(mapping_layers=4)).eval()
    z = torch.randn(2, 8)
    w = G.mapping(z).detach()
    zspace = E.LatentSpace("z", 8, None, lambda lat: G(lat).detach(), torch.zeros(8), torch.ones(8))
    rows = dict(E.interpolation_rows(zspace, z[0], z[1], 7, ("w", lambda lat: G.synthesis(lat).detach(), w[0], w[1])))
    zl, wl = rows["z lerp"], rows["w lerp"]
    assert torch.allclose(zl[0], wl[0], atol=1e-5) and torch.allclose(zl[-1], wl[-1], atol=1e-5)
    assert (zl[3] - wl[3]).abs().max() > 1e-3


def test_train_gan_stylegan_lite_export(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", "1", str(ROOT / "train_gan.py"),
           "--arch", "stylegan-lite", "--style-mode", "modulated", "--noise-inputs", "--loss", "wgan-gp",
           "--data", "synthetic", "--synthetic-size", "48", "--n-real", "16", "--resolution", "16",
           "--batch-size", "4", "--max-steps", "3", "--fid-every", "0", "--sample-every", "2", "--save-every", "3",
           "--ngf", "4", "--ndf", "4", "--latent-dim", "8", "--grid-samples", "4", "--out", str(tmp_path),
           "--name", "sg"]
    env = {**os.environ, "FACEGEN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ex = load_export(tmp_path / "sg" / "export.safetensors")
    assert ex.model_config["arch"] == "stylegan-lite" and ex.model_config["style_mode"] == "modulated"
    assert isinstance(ex.model, StyleGANGenerator) and ex.model.config.noise
    assert float(ex.model.w_avg.abs().sum()) > 0                       # tracked during training, stored in the export
    imgs = ex.model.sample(3, generator=torch.Generator().manual_seed(0), truncation=0.7)
    assert imgs.shape == (3, 3, 16, 16) and torch.isfinite(imgs).all()
    bad = subprocess.run([sys.executable, str(ROOT / "train_gan.py"), "--arch", "stylegan-lite", "--upsample",
                          "transposed", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "upsamples by resizing" in bad.stderr
