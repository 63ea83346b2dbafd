"""models/ddpm.py: schedule and target identities, UNet layout, our DDIM loop vs DDIMPipeline, exports, and an
overfit run showing that the training objective and the sampler agree (ε and v)."""
from __future__ import annotations

import copy

import math

import numpy as np
import pytest
import torch

from models.ddpm import (DiffusionConfig, DiffusionConfigError, DiffusionModel, build_from_config, diffusion_loss,
                         export_diffusers, train_scheduler, training_target)
from utils.ema import EMA
from utils.export import load_export, save_export

TINY = dict(resolution=16, base_channels=16, layers_per_block=1, attn_res=(8,), dropout=0.0)


def tiny_model(seed: int = 0, **kw) -> DiffusionModel:
    torch.manual_seed(seed)
    return DiffusionModel(DiffusionConfig(**{**TINY, **kw})).eval()


# ---------------------------------------------------------------------------------------------- schedules, targets

def cosine_betas(T: int, s: float = 0.008):
    """The plan's cosine schedule (docs/plan.md, plan 4.2), verbatim."""
    t = torch.linspace(0, T, T + 1)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(0, 0.999)


def test_cosine_schedule_is_the_plans_cosine_betas():
    ours = train_scheduler(DiffusionConfig(**TINY, beta_schedule="cosine")).betas
    ref = cosine_betas(1000)
    assert ours.shape == ref.shape == (1000,)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-6)
    assert ours[-1] == pytest.approx(0.999)  # the cap applies to the last steps in both


def test_linear_schedule_is_ho_et_al():
    betas = train_scheduler(DiffusionConfig(**TINY)).betas
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, 1000))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noising_and_v_target_identities(schedule):
    cfg = DiffusionConfig(**TINY, beta_schedule=schedule, prediction_type="v_prediction")
    sched = train_scheduler(cfg)
    # ᾱ recomputed independently in float64 from the betas
    abar = torch.cumprod(1 - sched.betas.double(), 0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(5, 3, 16, 16, generator=g)
    t = torch.tensor([0, 249, 500, 750, 999])
    a = abar[t].view(-1, 1, 1, 1)
    x_t = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(x_t.double(), a.sqrt() * x0 + (1 - a).sqrt() * eps, rtol=0, atol=1e-5)
    v = training_target(sched, x0, eps, t)
    torch.testing.assert_close(v.double(), a.sqrt() * eps - (1 - a).sqrt() * x0, rtol=0, atol=1e-5)
    eps_sched = train_scheduler(DiffusionConfig(**TINY, beta_schedule=schedule))
    assert training_target(eps_sched, x0, eps, t) is eps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_step_inverts_the_training_target(prediction_type):
    """Given the exact target as the model output, the sampler's x0 estimate is the true x0 (no clipping needed)."""
    model = tiny_model(prediction_type=prediction_type, clip_sample=False)
    sched_train, sched_ddim = train_scheduler(model.config), model.ddim_scheduler()
    sched_ddim.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    eps = torch.randn(2, 3, 16, 16, generator=g)
    for t in sched_ddim.timesteps[:-1]:
        tt = t.repeat(2)
        x_t = sched_train.add_noise(x0, eps, tt)
        out = sched_ddim.step(training_target(sched_train, x0, eps, tt), t, x_t)
        # ᾱ_t ≈ 4e-5 at t = 999 amplifies float32 rounding in x0 = (x_t − √(1−ᾱ)ε)/√ᾱ; elsewhere tight
        torch.testing.assert_close(out.pred_original_sample, x0, rtol=0, atol=2e-2 if t > 900 else 1e-4)


# ---------------------------------------------------------------------------------------------- network layout

@pytest.mark.parametrize("resolution,attn,expected", [
    (16, (8, 16), ("AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D")),           # levels 16, 8, 4
    (16, (8, 16, 32), ("AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D")),       # 32² does not exist at 16²
    (32, (8, 16, 32), ("AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D")),
    (64, (8, 16), ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")),  # plan 4.1 at 64²
])
def test_attention_only_at_listed_resolutions(resolution, attn, expected):
    cfg = DiffusionConfig(resolution=resolution, base_channels=16, layers_per_block=1, attn_res=attn)
    unet = DiffusionModel(cfg).unet
    assert unet.config.down_block_types == expected
    up = tuple(t.replace("Down", "Up") for t in reversed(expected))
    assert unet.config.up_block_types == up
    assert unet.config.sample_size == resolution
    if resolution > 32:
        return  # a 64² forward pass costs seconds on CPU; the smaller ones check that the blocks connect
    out = unet(torch.zeros(1, 3, resolution, resolution), torch.tensor(10)).sample
    assert out.shape == (1, 3, resolution, resolution)


def test_plan_configs_have_the_documented_widths():
    base = DiffusionConfig(resolution=64)
    assert base.block_channels == (128, 256, 256, 256) and base.attention_levels == (16, 8)
    wide = DiffusionConfig(resolution=64, base_channels=192, attn_res=(8, 16, 32))
    assert wide.block_channels == (192, 384, 384, 384) and wide.attention_levels == (32, 16, 8)


@pytest.mark.parametrize("kw,message", [
    (dict(channel_mult=(1, 2, 2, 2, 2)), "below 2²"),
    (dict(beta_schedule="sigmoid"), "beta_schedule must be one of"),
    (dict(prediction_type="sample"), "prediction_type must be one of"),
    (dict(attn_head_dim=12), "does not divide"),
    (dict(resolution=24), "power of two"),
])
def test_bad_configs_raise_one_line(kw, message):
    with pytest.raises(DiffusionConfigError, match=message) as e:
        DiffusionConfig(**{**TINY, **kw})
    assert "\n" not in str(e.value)


def test_build_from_config_rejects_unknown_keys():
    cfg = DiffusionConfig(**TINY).to_dict()
    assert isinstance(build_from_config(cfg), DiffusionModel)
    with pytest.raises(DiffusionConfigError, match="unknown DDPM config keys: bogus"):
        build_from_config({**cfg, "bogus": 1})


# ---------------------------------------------------------------------------------------------- sampler

@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_our_ddim_loop_equals_diffusers_ddim_pipeline(eta, spacing, one_thread):
    from diffusers import DDIMPipeline

    model = tiny_model(prediction_type="v_prediction", beta_schedule="cosine", timestep_spacing=spacing)
    ours = model.sample(3, generator=torch.Generator().manual_seed(7), steps=12, eta=eta)
    pipe = DDIMPipeline(unet=model.unet, scheduler=model.ddim_scheduler())
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), eta=eta, num_inference_steps=12,
               output_type="pt").images
    assert ours.shape == (3, 3, 16, 16)
    torch.testing.assert_close(ours, ref * 2 - 1, rtol=0, atol=1e-6)


def test_sample_is_seeded_bounded_and_independent_of_the_split(one_thread):
    model = tiny_model()
    a = model.sample(4, generator=torch.Generator().manual_seed(3), steps=8)
    b = model.sample(4, generator=torch.Generator().manual_seed(3), steps=8, batch_size=3)
    c = model.sample(4, generator=torch.Generator().manual_seed(4), steps=8)
    assert a.abs().max() <= 1 and torch.isfinite(a).all()
    # eta = 0: the split into batches does not matter (up to batch-size-dependent conv kernels)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-3)
    assert (a - c).abs().mean() > 0.1
    model.train()
    model.sample(1, steps=2)
    assert model.training, "sample() must restore the train/eval mode it found"


def test_sample_speed_options_stay_close_to_fp32(one_thread):
    """channels_last is numerically neutral; bf16 autocast moves samples a little (the DDIM update stays fp32)."""
    model = tiny_model(seed=2)
    for p in model.parameters():  # non-trivial weights everywhere, so the UNet output matters
        p.data.add_(0.01 * torch.randn_like(p))

    def draw(**kw):
        return copy.deepcopy(model).sample(4, generator=torch.Generator().manual_seed(5), steps=6, **kw)

    fp32, nhwc = draw(), draw(channels_last=True)
    torch.testing.assert_close(nhwc, fp32, rtol=0, atol=1e-3)  # rounding-level, grown over 6 steps
    # A random UNet's DDIM chain is chaotic (bf16 rounding grows over the steps; a trained one stays within ~1e-3,
    # docs/PERFORMANCE.md), so bf16 is checked on one step: the x_0 prediction from the same noise.
    one = copy.deepcopy(model).sample(4, generator=torch.Generator().manual_seed(5), steps=1)
    one_bf16 = copy.deepcopy(model).sample(4, generator=torch.Generator().manual_seed(5), steps=1, precision="bf16",
                                           channels_last=True)
    diff = (one_bf16 - one).abs().mean().item()
    assert 0 < diff < 0.02, diff  # autocast had an effect, and it is far below the image's scale (2)
    assert one_bf16.dtype == torch.float32 and one_bf16.abs().max() <= 1


def test_sampler_settings_record_the_ddim_configuration(one_thread):
    model = tiny_model(timestep_spacing="leading", set_alpha_to_one=False, sample_steps=7, eta=0.5)
    s = model.sampler_settings()
    assert s["timestep_spacing"] == "leading" and s["set_alpha_to_one"] is False
    assert (s["steps"], s["eta"], s["sampler"], s["clip_sample"]) == (7, 0.5, "ddim", True)
    assert model.sampler_settings(100, 0.0)["steps"] == 100
    # sample() without steps/eta uses the config's (what evaluate.py gets when it passes none)
    a = model.sample(2, generator=torch.Generator().manual_seed(0))
    b = model.sample(2, generator=torch.Generator().manual_seed(0), steps=7, eta=0.5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- exports

def test_export_round_trip_and_diffusers_directory(tmp_path, monkeypatch, one_thread):
    from diffusers import DDIMPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_model(seed=5, beta_schedule="cosine", prediction_type="v_prediction")
    for p in model.parameters():  # non-trivial weights everywhere (diffusers zero-inits some output convs)
        p.data.add_(0.01 * torch.randn_like(p))
    expected = model.sample(2, generator=torch.Generator().manual_seed(0), steps=6)

    path = save_export(tmp_path / "export.safetensors", "ddpm", model, model.config.to_dict(), {}, step=3)
    ex = load_export(path, family="ddpm")
    assert isinstance(ex.model, DiffusionModel) and ex.model.resolution == 16 and ex.step == 3
    torch.testing.assert_close(ex.model.sample(2, generator=torch.Generator().manual_seed(0), steps=6), expected)

    export_diffusers(model, tmp_path / "diffusers")
    pipe = DDIMPipeline.from_pretrained(str(tmp_path / "diffusers"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.timestep_spacing == "trailing" and pipe.scheduler.config.set_alpha_to_one
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=6, output_type="pt").images
    torch.testing.assert_close(out * 2 - 1, expected, rtol=0, atol=1e-6)
    assert not list(tmp_path.glob(".diffusers.tmp*")), "the temporary build folder must be renamed away"


# ---------------------------------------------------------------------------------------------- objective ⇄ sampler

def training_image() -> torch.Tensor:
    """A real 16² photo crop (skimage's bundled astronaut, her face) in [-1, 1], 1×3×16×16."""
    from PIL import Image
    from skimage import data as skdata

    img = Image.fromarray(skdata.astronaut()).crop((140, 20, 340, 220)).resize((16, 16), Image.LANCZOS)
    return torch.tensor(np.asarray(img)).permute(2, 0, 1).float().div(127.5).sub(1)[None]


# Measured with seeds 0, 1, 2 (mean per-image MSE in [-1, 1] units): ε 0.032 / 0.039 / 0.035, v 0.013 / 0.014 /
# 0.015; sampled with the other prediction type: ε-trained 0.13 / 0.13 / 0.13, v-trained 0.10 / 0.23 / 0.23.
@pytest.mark.parametrize("prediction_type,steps,batch,max_mean_mse", [
    ("epsilon", 400, 16, 0.05),
    ("v_prediction", 300, 8, 0.025),
])
def test_overfit_one_image_then_ddim_returns_it(prediction_type, steps, batch, max_mean_mse, one_thread):
    """Train on a single image with the trainer's loss; DDIM-50 (η=0) from any noise must then land on it.

    Proves that the objective (ε or v target) and the sampler (DDIMScheduler with the same prediction type and
    schedule) agree.  Negative control: the same weights sampled as the other prediction type miss the image by
    more than twice the threshold.

    ε gets more steps and a bigger batch and still ends further off: its loss weights x0 errors by SNR(t), so
    the high-noise steps that decide the DDIM trajectory are learned slowly (plan 4.3's motivation for v).
    """
    x0 = training_image()
    cfg = {**TINY, "attn_res": (), "prediction_type": prediction_type, "beta_schedule": "cosine"}
    torch.manual_seed(0)
    model = DiffusionModel(DiffusionConfig(**cfg)).train()
    sched = train_scheduler(model.config)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    ema = EMA(model, decay=0.99)
    for i in range(steps):
        for group in opt.param_groups:  # cosine decay: the last steps settle instead of bouncing around
            group["lr"] = 5e-3 * 0.5 * (1 + math.cos(math.pi * i / steps))
        per_sample, _ = diffusion_loss(model, sched, x0.expand(batch, -1, -1, -1))
        opt.zero_grad()
        per_sample.mean().backward()
        opt.step()
        ema.update(model)

    def mse_when_sampled_as(**overrides) -> torch.Tensor:
        m = DiffusionModel(DiffusionConfig(**{**cfg, **overrides})).eval()
        m.load_state_dict(ema.module.state_dict())
        return (m.sample(4, generator=torch.Generator().manual_seed(0), steps=50, eta=0.0) - x0).pow(2).mean()

    mse = mse_when_sampled_as()
    assert mse < max_mean_mse, f"{prediction_type}: DDIM sample vs training image MSE {mse:.4f}"
    wrong = mse_when_sampled_as(prediction_type="v_prediction" if prediction_type == "epsilon" else "epsilon")
    assert wrong > 2 * max_mean_mse, f"negative control too close: {wrong:.4f} vs {mse:.4f}"
