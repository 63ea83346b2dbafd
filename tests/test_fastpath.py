"""The fast path must not change the model: one training step with the speed options that exist on a CPU
(channels_last weights, fused / foreach optimizer kernels) gives the same losses and the same updated weights as the
plain step (NCHW, for-loop optimizer) on the same batch from the same initial weights.

The steps are the ones bench/train_throughput.py times as "ours" (the trainers' step functions / statements) at
test size; torch.compile is not exercised here (minutes of compilation on a CPU), bf16 is checked against its stated
bound separately.

Tolerances (fp32): losses rtol 1e-5 — NHWC convolutions may use another algorithm (different summation order,
~1e-7 relative per op).  Weights: the first Adam step moves every weight by ≈ lr·g/(|g|+eps) ≈ ±lr; rounding-level
differences in g change that by ≪ lr except where g itself is at rounding level, so weights are compared with
atol = 1e-2·lr (an update that went wrong differs by ~lr) and rtol 1e-5, allowing ≤ 1e-4 of the weights (those
with rounding-level gradients, whose first Adam step is a coin flip) to differ by up to 2·lr (see assert_same_weights).
"""
from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest
import torch

from utils import fastpath

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "bench" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


B = load_bench()
CPU = torch.device("cpu")

# (family, preset, resolution, width divisor): every normalisation / attention / loss kind of the table at test size.
CASES = [("gan", "2.1", 16, 8),        # BatchNorm, BCE, transposed convs
         ("gan", "2.3", 32, 8),        # spectral norm, self-attention, GroupNorm, WGAN-GP (double backward)
         ("vae", "3.3", 32, 8),        # VAE + random-init VGG perceptual + PatchGAN
         ("ddpm", "4.3", 16, 16)]      # UNet with attention, cosine schedule, v-prediction


def step_once(family, preset, resolution, width_div, *, channels_last: bool, impl: str, images):
    argv = ["--family", family, "--preset", preset, "--device", "cpu", "--resolution", str(resolution),
            "--batch-size", "4", "--width-div", str(width_div), "--optimizer-impl", impl, "--no-compile",
            "--precision", "no", "--channels-last" if channels_last else "--no-channels-last"]
    args = B.parse_args(argv)
    B.resolve(args)
    targs = B.trainer_args(args)
    if family == "ddpm":
        # Dropout draws its mask in memory order, so NHWC drops other units (same distribution): off for this check.
        targs.dropout = 0.0
    models = B.build_models(family, targs, CPU)
    step = B.our_step(family, targs, models, types.SimpleNamespace(train=images), CPU)
    torch.manual_seed(123)
    losses = step()
    weights = {f"{name}.{k}": v.detach().clone() for name, m in models.items() if isinstance(m, torch.nn.Module)
               for k, v in m.state_dict().items()}
    return {k: float(v) for k, v in losses.items()}, weights, targs


def learning_rate(family, targs) -> float:
    """The smallest learning rate of the first step (DDPM: after its warm-up factor)."""
    if family == "gan":
        return min(targs.lr_g, targs.lr_d)
    if family == "vae":
        return min(targs.lr, targs.disc_lr) if targs.lambda_adv > 0 else targs.lr
    return targs.lr * min(1.0, 1 / max(targs.warmup_steps, 1))


@pytest.mark.parametrize("family,preset,resolution,width_div", CASES)
def test_fast_path_gives_the_plain_step(family, preset, resolution, width_div):
    images = torch.randint(0, 256, (8, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    plain_loss, plain_w, targs = step_once(family, preset, resolution, width_div, channels_last=False,
                                           impl="for-loop", images=images)
    init = B.build_models(family, targs, CPU)  # the untrained weights, to check that the step moved them
    moved = max((plain_w[f"{n}.{k}"] - v).abs().max().item() for n, m in init.items()
                if isinstance(m, torch.nn.Module) for k, v in m.state_dict().items() if v.is_floating_point())
    lr = learning_rate(family, targs)
    assert moved > 0.5 * lr, f"the plain step did not update the weights (max change {moved:g}, lr {lr:g})"
    assert plain_loss and all(torch.isfinite(torch.tensor(v)) for v in plain_loss.values())

    # foreach is the same code path on every family: checked once, on the cheapest case.
    for impl in ("fused", "foreach") if (family, preset) == ("gan", "2.1") else ("fused",):
        loss, weights, _ = step_once(family, preset, resolution, width_div, channels_last=True, impl=impl,
                                     images=images)
        assert loss.keys() == plain_loss.keys()
        for k in loss:
            assert loss[k] == pytest.approx(plain_loss[k], rel=1e-5, abs=1e-6), f"{impl}: loss {k}"
        assert_same_weights(weights, plain_w, lr, impl)


def assert_same_weights(weights: dict, plain: dict, lr: float, label: str) -> None:
    """Equal within atol = 1e-2·lr, rtol 1e-5, except for the rare weights whose gradient is itself at rounding
    level: Adam's first step is ≈ lr·sign(g) there, so a rounding-level change of g can move them by up to 2·lr.
    Those must be ≤ 1e-4 of all weights (seen: ~4e-6) and within 2·lr (+ rounding); a real change of the model
    (a wrong layout, hyper-parameter or update) moves a large fraction of the weights."""
    assert weights.keys() == plain.keys()
    outliers, total = 0, 0
    for k, w in weights.items():
        assert w.is_contiguous(), f"state_dict of a channels_last model must be contiguous ({k})"
        ref = plain[k]
        if not w.is_floating_point():
            assert torch.equal(w, ref), f"{label}: {k}"
            continue
        diff = (w - ref).abs()
        off = diff > 1e-2 * lr + 1e-5 * ref.abs()
        outliers, total = outliers + int(off.sum()), total + w.numel()
        assert float(diff.max()) <= 2.0 * lr * 1.01 + 1e-5 * float(ref.abs().max()), f"{label}: {k} moved > 2 lr"
        assert int(off.sum()) <= max(8, 1e-3 * w.numel()), f"{label}: {k}: {int(off.sum())} of {w.numel()} differ"
    assert outliers <= 1e-4 * total, f"{label}: {outliers} of {total} weights differ by more than 1e-2 lr"


def test_bf16_autocast_stays_within_the_stated_bound():
    """--mixed-precision bf16 changes numerics; the help text states ~1e-2 relative on the loss. Check the VAE loss."""
    from models.vae import VAE, VAEConfig
    from utils import vae_training

    torch.manual_seed(0)
    vae = VAE(VAEConfig(resolution=16, latent_dim=16, base_channels=8, bottom=4)).eval()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    args = types.SimpleNamespace(recon="mse", beta=1.0)

    def loss(autocast: bool) -> float:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            x_hat, mu, logvar = vae(x)
            return float(vae_training.vae_terms(args, x_hat, x, mu, logvar, None, None, None)["loss"].detach())

    fp32, bf16 = loss(False), loss(True)
    assert fp32 != bf16, "autocast had no effect: the check would be vacuous"
    assert bf16 == pytest.approx(fp32, rel=2e-2)


def test_channels_last_checkpoint_round_trip(tmp_path):
    """NHWC weights save through safetensors (which refuses non-contiguous tensors) and load back exactly."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 3))
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    fastpath.channels_last_(net)
    assert not net[0].weight.is_contiguous() and net[0].weight.is_contiguous(memory_format=torch.channels_last)
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")
    for k, v in reference.items():
        assert torch.equal(loaded[k], v), k
    other = fastpath.channels_last_(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                                        torch.nn.Conv2d(8, 4, 3)))
    other.load_state_dict(loaded)
    assert other[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(other.eval()(x), net.eval()(x), rtol=1e-5, atol=1e-6)


def test_optimizer_impl_selection():
    p = [torch.nn.Parameter(torch.randn(3))]
    assert fastpath.make_optimizer(torch.optim.Adam, p, "fused", device="cpu").param_groups[0]["fused"]
    assert fastpath.make_optimizer(torch.optim.Adam, p, "foreach").param_groups[0]["foreach"]
    assert not fastpath.make_optimizer(torch.optim.Adam, p, "for-loop").param_groups[0]["foreach"]
    auto = fastpath.make_optimizer(torch.optim.RMSprop, p, "auto")  # no fused RMSprop: auto falls back
    assert auto.param_groups[0]["foreach"]
    with pytest.raises(fastpath.FastPathError, match="no fused implementation"):
        fastpath.make_optimizer(torch.optim.RMSprop, p, "fused")


@pytest.mark.parametrize("amx,avx512_bf16", [(False, False), (True, False), (False, True)])
def test_bf16_choice_follows_the_cpu(amx, avx512_bf16, monkeypatch):
    """bf16 is the bench's default only where the CPU computes it (AMX or AVX512-BF16) and only at full widths (the
    CPU size's narrow convolutions are faster in fp32); channels_last goes with it, and a full-width CPU run is
    written beside, not over, the CPU-sized result."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    native = amx or avx512_bf16
    assert fastpath.bf16_is_native("cpu") is native
    assert fastpath.bf16_is_native("meta") is False
    small = B.parse_args(["--family", "ddpm", "--preset", "4.1", "--device", "cpu"])
    B.resolve(small)
    assert (small.precision, small.channels_last, small.compile, small.width_div) == ("no", False, False, 8)
    assert B.default_name(small) == "train_throughput_ddpm_4.1_cpu.json"
    full = B.parse_args(["--family", "gan", "--preset", "2.1", "--device", "cpu", "--size", "full", "--batch-size", "16"])
    B.resolve(full)
    assert (full.precision, full.channels_last) == (("bf16", True) if native else ("no", False))
    assert (full.resolution, full.width_div, full.compile) == (None, 1, False)
    assert B.default_name(full) == "train_throughput_gan_2.1_cpu_full-b16.json"


@pytest.mark.parametrize("family,preset", [(f, p) for f, rows in B.PRESETS.items() for p in rows])
def test_bench_presets_are_the_row_scripts(family, preset):
    """A preset is its row script's flags (read, not copied), and resolves in the trainer's own parser."""
    from utils.row_scripts import row_script, trainer_flags

    assert B.PRESETS[family][preset] == trainer_flags(row_script(family, preset))
    args = vars(B.trainer_parse_args(family)(B.PRESETS[family][preset] + ["--vgg-init", "random"]
                                             if family == "vae" else B.PRESETS[family][preset]))
    assert args["data"] == "synthetic" and args["name"] is None     # place flags are the bench's own


def test_accelerate_launch_on_cpu_uses_every_core(monkeypatch):
    """accelerate launch exports OMP_NUM_THREADS=1; a CPU run must still use the machine's cores."""
    import os

    from utils.fastpath import cpu_threads_for_launch

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("FACEGEN_THREADS", raising=False)
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    assert cpu_threads_for_launch(1) is None                 # plain `python train_*.py`: torch's own choice
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")    # what accelerate launch exports to its children
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads_for_launch(1) == cores
    assert cpu_threads_for_launch(2) == max(1, cores // 2)   # processes on one machine share the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads_for_launch(1) is None                 # a value the user exported is kept
    monkeypatch.setenv("FACEGEN_THREADS", "5")
    assert cpu_threads_for_launch(1) == 5
