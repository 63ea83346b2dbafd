"""The VAE's adversarial weight (train_vae.py, row 3.3): VQGAN's adaptive weight (Esser et al. 2021, eq. 7), its
linear ramp, and the collapse it prevents, in miniature on CPU (32 px, batch 8, ~10 s)."""
from __future__ import annotations

import copy
import types

import pytest
import torch

from models.losses import LOSSES
from models.patchgan import PatchDiscriminator
from models.vae import VAE, VAEConfig
from utils import vae_flags, vae_training

HINGE = LOSSES["hinge"]


def tiny(resolution=16, seed=0):
    torch.manual_seed(seed)
    vae = VAE(VAEConfig(resolution=resolution, latent_dim=8, base_channels=8))
    disc = PatchDiscriminator(3, 8, 2)
    x = torch.rand(4, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return vae, disc, x


def args_for(*extra):
    return vae_flags.parse_args(["--resolution", "16", "--disc-layers", "2", "--lambda-adv", "0.1", *extra])


# ------------------------------------------------------------------------------------------- adaptive weight

def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    vae, disc, x = tiny()
    x_hat, mu, logvar = vae(x)
    w = vae_training.last_layer_weight(vae)
    assert w is vae.decoder.to_rgb[0].weight and w.shape == (3, 8, 3, 3)
    nll = (x_hat - x).pow(2).mean()
    adv = -disc(x_hat).mean()
    g_nll = torch.autograd.grad(nll, w, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, w, retain_graph=True)[0]
    by_hand = g_nll.norm() / (g_adv.norm() + 1e-4)

    lam = vae_training.adaptive_weight(nll, adv, w)
    assert not lam.requires_grad and lam.shape == ()
    assert float(lam) == pytest.approx(float(by_hand), rel=1e-6)
    # Not symmetric: the adversarial loss is the denominator.
    swapped = g_adv.norm() / (g_nll.norm() + 1e-4)
    assert float(vae_training.adaptive_weight(adv, nll, w)) == pytest.approx(float(swapped), rel=1e-6)
    assert abs(float(swapped) * float(by_hand) - 1) > 1e-3 or abs(float(by_hand) - 1) > 1e-2
    # The graph is retained for the training backward.
    (nll + lam * adv).backward()
    assert w.grad is not None


def test_adaptive_weight_is_clamped_and_survives_an_overflow():
    vae, disc, x = tiny()
    x_hat = vae(x)[0]
    w = vae_training.last_layer_weight(vae)
    nll = (x_hat - x).pow(2).mean() * 1e8
    flat = 0.0 * x_hat.sum()                     # zero adversarial gradient: ratio ‖g‖/1e-4 ≫ 1e4
    assert float(vae_training.adaptive_weight(nll, flat, w)) == vae_training.ADAPTIVE_MAX
    nan = (x_hat * float("nan")).sum()           # what an fp16 overflow leaves: weight 0, loss stays finite
    assert float(vae_training.adaptive_weight(nll, nan, w)) == 0.0


def test_grad_scale_does_not_change_the_weight():
    vae, disc, x = tiny()
    x_hat = vae(x)[0]
    w = vae_training.last_layer_weight(vae)
    nll, adv = (x_hat - x).pow(2).mean(), -disc(x_hat).mean()
    plain = vae_training.adaptive_weight(nll, adv, w)
    scaled = vae_training.adaptive_weight(nll, adv, w, grad_scale=torch.tensor(65536.0))
    assert float(scaled) == pytest.approx(float(plain), rel=1e-5)
    # The scale is read from Accelerate's GradScaler, None without one.
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert float(vae_training.fp16_grad_scale(types.SimpleNamespace(scaler=scaler, device="cpu"))) == 1024.0
    assert vae_training.fp16_grad_scale(types.SimpleNamespace(scaler=None, device="cpu")) is None


@pytest.mark.parametrize("autocast", [False, True])
def test_vae_terms_weight_the_adversarial_loss(autocast):
    """adaptive: loss = nll + β·KL/D + λ_adv·ramp·λ·L_adv and adv_w = λ_adv·ramp·λ (bf16 autocast too);
    fixed: adv_w = λ_adv·ramp."""
    vae, disc, x = tiny()
    w = vae_training.last_layer_weight(vae)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        x_hat, mu, logvar = vae(x)
        t = vae_training.vae_terms(args_for(), x_hat, x, mu, logvar, None, disc, HINGE, last_layer=w, adv_scale=0.5)
    nll, rest = t["rec"], args_for().beta * t["kl"] / x[0].numel()
    lam = vae_training.adaptive_weight(nll, t["adv"], w)
    assert float(t["adv_w"]) == pytest.approx(0.1 * 0.5 * float(lam), rel=1e-5)
    assert float(t["loss"].detach()) == pytest.approx(float((nll + rest + t["adv_w"] * t["adv"]).detach()), rel=1e-6)
    assert torch.isfinite(t["loss"]) and not t["adv_w"].requires_grad

    fixed = vae_training.vae_terms(args_for("--adv-weight", "fixed"), x_hat, x, mu, logvar, None, disc, HINGE,
                                adv_scale=0.5)
    assert float(fixed["adv_w"]) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="last layer"):
        vae_training.vae_terms(args_for(), x_hat, x, mu, logvar, None, disc, HINGE)


# ------------------------------------------------------------------------------------------- ramp

def test_ramp_is_linear_from_the_discriminator_start():
    ramp = vae_training.adv_ramp
    assert [ramp(s, 10, 4) for s in (9, 10, 11, 12, 13, 14, 15, 1000)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [ramp(s, 10, 0) for s in (0, 10, 11)] == [1.0, 1.0, 1.0]      # no ramp: full weight at once
    assert ramp(5, 0, 1) == 1.0 and ramp(0, 0, 1) == 0.0
    args = args_for("--adv-ramp", "2ep", "--disc-start", "1ep")
    assert args.adv_ramp.steps(50) == 100 and ramp(100, args.disc_start.steps(50), args.adv_ramp.steps(50)) == 0.5


@pytest.mark.parametrize("argv, message", [
    (["--adv-weight", "learned"], "invalid choice"),
    (["--adv-ramp", "-3"], "period must be ≥ 0"),
    (["--adv-ramp", "100"], "--adv-ramp needs a discriminator"),
    (["--disc-sn", "--adv-ramp", "1ep"], "--adv-ramp and --disc-sn need a discriminator"),
])
def test_bad_adversarial_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        vae_flags.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]


def test_disc_sn_builds_a_spectral_norm_discriminator():
    from torch.nn.utils.parametrize import is_parametrized

    def convs(disc):
        return [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]

    plain = vae_training.build_discriminator(args_for("--disc-norm", "none"))
    sn = vae_training.build_discriminator(args_for("--disc-sn", "--disc-norm", "none"))
    assert not any(is_parametrized(m, "weight") for m in convs(plain))
    assert len(convs(sn)) == 4 and all(is_parametrized(m, "weight") for m in convs(sn))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in sn.modules())
    assert vae_training.build_discriminator(vae_flags.parse_args([])) is None


# ------------------------------------------------------------------------------------------- the collapse

def test_adaptive_weight_prevents_the_collapse_in_miniature():
    """Row 3.3's collapse, small: a VAE pretrained for 100 steps on 32 rendered faces (32 px), then a PatchGAN
    switched on.  With a fixed λ_adv = 1 the discriminator's gradient at the decoder's last layer grows past the
    reconstruction gradient (seen: ×3.5–4.4) and the reconstruction MSE blows up (seen: ×4–5 in 30 steps); with
    the adaptive weight × 0.1 the ratio is exactly 0.1 and the MSE stays within 1.2× (seen: ×0.8–0.9, as
    without the discriminator)."""
    from accelerate import Accelerator

    from utils.synthetic import render_faces

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and no slower on a loaded 2-core machine
    try:
        faces = torch.from_numpy(render_faces(range(32), 32)).permute(0, 3, 1, 2).float() / 127.5 - 1
        acc = Accelerator(cpu=True)
        base = ["--resolution", "32", "--beta", "1e-4", "--disc-layers", "2"]

        def mse(model):
            model.eval()
            with torch.no_grad():
                out = (model.reconstruct(faces) - faces).pow(2).mean().item()
            model.train()
            return out

        torch.manual_seed(0)
        vae = VAE(VAEConfig(resolution=32, latent_dim=32, base_channels=8))
        opt = torch.optim.Adam(vae.parameters(), 1e-3)
        order = torch.Generator().manual_seed(0)
        pre = vae_flags.parse_args(base)
        for _ in range(100):
            vae_training.vae_update(acc, vae, opt, None, None, None, None, faces[torch.randperm(32, generator=order)[:8]],
                                 pre)
        start = mse(vae)

        def adversarial(mode: str, lam: float) -> tuple[float, float]:
            """MSE ratio after 30 steps with the discriminator on, and the gradient-norm ratio at the last layer
            of the weighted adversarial term vs the reconstruction term on the last batch."""
            torch.manual_seed(1)
            v = copy.deepcopy(vae)
            o = torch.optim.Adam(v.parameters(), 1e-3)
            o.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict alone would share Adam's moments
            d = PatchDiscriminator(3, 16, 2)
            od = torch.optim.Adam(d.parameters(), 2e-4, betas=vae_training.DISC_BETAS)
            a = vae_flags.parse_args([*base, "--lambda-adv", str(lam), "--adv-weight", mode])
            order = torch.Generator().manual_seed(2)
            for _ in range(30):
                x = faces[torch.randperm(32, generator=order)[:8]]
                terms, ok = vae_training.vae_update(acc, v, o, d, od, HINGE, None, x, a)
                assert ok
            x_hat, mu, logvar = v(x)
            w = vae_training.last_layer_weight(v)
            t = vae_training.vae_terms(a, x_hat, x, mu, logvar, None, d, HINGE, last_layer=w)
            g_rec = torch.autograd.grad(t["rec"], w, retain_graph=True)[0].norm()
            g_adv = torch.autograd.grad(t["adv_w"] * t["adv"], w)[0].norm()
            return mse(v) / start, float(g_adv / g_rec)

        fixed_mse, fixed_ratio = adversarial("fixed", 1.0)
        adaptive_mse, adaptive_ratio = adversarial("adaptive", 0.1)
    finally:
        torch.set_num_threads(threads)
    assert fixed_ratio > 2.0, f"the fixed-weight discriminator should dominate the last layer ({fixed_ratio:.2f})"
    assert fixed_mse > 2.5, f"fixed λ_adv = 1 should blow the reconstruction up (MSE ×{fixed_mse:.2f})"
    assert adaptive_ratio == pytest.approx(0.1, rel=1e-3)
    assert adaptive_mse <= 1.2, f"adaptive weight: MSE ×{adaptive_mse:.2f} after the discriminator started"
