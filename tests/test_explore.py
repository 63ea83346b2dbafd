"""explore_latent.py: path maths, nearest-neighbour search and the memorisation ratio, and end-to-end runs on tiny
DCGAN / StyleGAN-lite / VAE exports built in-process (no training: the tool only needs an export)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

import explore_latent as E
from models.gan import GANConfig, build_generator
from models.vae import VAE, VAEConfig
from utils import figures
from utils.export import save_export

DATA = {"data": "synthetic", "synthetic_size": 48, "n_real": 16, "data_seed": 0, "crop": "center"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, cache_dir):
    monkeypatch.setenv("FACEGEN_CACHE", str(cache_dir))


def gan_export(path, arch="dcgan", **kw):
    torch.manual_seed(0)
    cfg = GANConfig(arch=arch, resolution=16, latent_dim=8, ngf=4, ndf=4,
                    upsample="nearest" if arch == "stylegan-lite" else "transposed", **kw).validate()
    g = build_generator(cfg).eval()
    return save_export(path, "gan", g, asdict(cfg), dict(DATA))


# ------------------------------------------------------------------------------------------------ maths

def test_lerp_slerp_endpoints_and_slerp_keeps_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    b = b / b.norm() * a.norm()
    t = torch.linspace(0, 1, 7)
    for path in (E.lerp(a, b, t), figures.slerp(a, b, t)):
        assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    norms = figures.slerp(a, b, t).norm(dim=1)
    assert torch.allclose(norms, a.norm().expand(7), rtol=1e-4)       # stays on the shell …
    assert E.lerp(a, b, t)[3].norm() < 0.9 * a.norm()                  # … lerp cuts through it (random a, b ~ 90°)


def test_crossfade_is_pixel_average():
    x, y = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    fade = E.crossfade(x, y, torch.tensor([0.0, 0.25, 1.0]))
    assert torch.equal(fade[0], x) and torch.equal(fade[2], y) and torch.allclose(fade[1], torch.full((3, 4, 4), 0.25))


def test_sweep_changes_only_the_swept_dimension():
    base = torch.randn(6)
    mean, std = torch.zeros(6), torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    lat = E.sweep_latents(base, [1, 4], mean, std, 3.0, 5).view(2, 5, 6)
    assert torch.allclose(lat[0, :, 1], torch.linspace(-6, 6, 5)) and torch.allclose(lat[1, :, 4], torch.linspace(-3, 3, 5))
    keep = torch.ones(6, dtype=torch.bool)
    keep[1] = False
    assert torch.equal(lat[0][:, keep], base[keep].expand(5, -1))


def test_nearest_matches_brute_force_and_memorised_sample_ratio_is_zero():
    g = torch.Generator().manual_seed(1)
    bank, q = torch.randn(50, 12, generator=g), torch.randn(5, 12, generator=g)
    d, i = figures.nearest(q, bank, 3, chunk=7)                        # chunking must not change the answer
    ref = torch.cdist(q, bank).topk(3, largest=False)
    assert torch.equal(i, ref.indices) and torch.allclose(d, ref.values)
    q[2] = bank[17]                                                    # a "sample" that copies a training image
    d, i = figures.nearest(q, bank, 1)
    rep = E.memorisation_report(d[:, 0], torch.full((4,), 2.0))
    assert int(i[2, 0]) == 17 and rep["min_ratio"] == 0.0 and rep["heldout_median_nn"] == 2.0


# ------------------------------------------------------------------------------------------------ end to end

def test_all_modes_on_dcgan_export(tmp_path):
    ckpt = gan_export(tmp_path / "g.safetensors")
    out = tmp_path / "ex"
    rep = E.main(["--ckpt", str(ckpt), "--out", str(out), "--mode", "all", "--num-dims", "3", "--steps", "5",
                  "--num-samples", "3", "--gif", "--mp4", "--device", "cpu"])
    for name in ("sweep.png", "interp.png", "neighbours.png", "sweep.gif", "interp.gif", "explore.json"):
        assert (out / name).is_file(), name
    assert rep["sweep"]["dims"] == [0, 1, 2] and rep["interp"]["prior"]["rows"] == ["pixel crossfade", "z lerp", "z slerp"]
    gif = Image.open(out / "interp.gif")
    assert gif.n_frames == 2 * 5 - 2                                   # ping-pong: 0..4..1
    px = rep["neighbours"]["pixel"]
    assert np.array(px["train_indices"]).shape == (3, 3) and rep["neighbours"]["num_train"] == 32
    assert all(a <= b for row in px["distances"] for a, b in zip(row, row[1:]))   # sorted nearest first
    assert px["heldout_median_nn"] > 0 and px["min_ratio"] > 0
    # grid: 3 rows of (sample | 3 neighbours) at 16 px with 2 px padding
    assert np.asarray(Image.open(out / "neighbours.png")).shape == (3 * 18 + 2, 4 * 18 + 2, 3)
    assert json.loads((out / "explore.json").read_text())["family"] == "gan"


def test_stylegan_w_space_sweep_uses_empirical_stats(tmp_path):
    ckpt = gan_export(tmp_path / "s.safetensors", arch="stylegan-lite")
    rep = E.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "w"), "--mode", "sweep", "--space", "w",
                  "--dims", "0,5", "--steps", "3", "--device", "cpu"])
    assert rep["space"] == "w" and rep["sweep"]["dims"] == [0, 5]
    assert max(rep["sweep"]["pixel_change_per_dim"].values()) > 0
    with pytest.raises(SystemExit, match="--dims"):
        E.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "w"), "--mode", "sweep", "--dims", "8"])


def test_vae_interpolates_encoded_heldout_images(tmp_path):
    torch.manual_seed(0)
    cfg = VAEConfig(resolution=16, latent_dim=6, base_channels=4, max_channels=8, bottom=4)
    ckpt = save_export(tmp_path / "v.safetensors", "vae", VAE(cfg).eval(), asdict(cfg), dict(DATA))
    rep = E.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "v"), "--mode", "interp", "--steps", "4",
                  "--device", "cpu"])
    assert rep["space"] == "vae-z"
    assert rep["interp"]["encoded"]["rows"] == ["held-out inputs", "pixel crossfade", "vae-z lerp", "vae-z slerp"]
    assert np.asarray(Image.open(tmp_path / "v" / "interp_encoded.png")).shape[0] == 4 * (16 + 2 * 2)   # 4 rows, each strip padded on both sides


def test_bad_family_and_bad_space_are_one_line_errors(tmp_path):
    from models.cyclegan import CycleGAN, CycleGANConfig, config_dict

    cfg = CycleGANConfig(resolution=16, gen_width=4, gen_blocks=1, disc_width=4)
    ckpt = save_export(tmp_path / "c.safetensors", "cyclegan", CycleGAN(cfg), config_dict(cfg), {})
    with pytest.raises(SystemExit, match="family 'cyclegan' has no latent space") as e:
        E.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "c")])
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="StyleGAN-lite"):
        E.main(["--ckpt", str(gan_export(tmp_path / "g.safetensors")), "--out", str(tmp_path / "g"), "--space", "w"])
    with pytest.raises(SystemExit, match="not found|No such|exist"):
        E.main(["--ckpt", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m")])
