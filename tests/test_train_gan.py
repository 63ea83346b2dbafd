"""train_gan.py: flag checks in-process; a few real runs through `accelerate launch` / `python` on CPU at 16–32 px."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.runs import run_script
from utils import gan_flags
from utils.export import load_export
from utils.gan_training import critic_iters, lr_at, model_config

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--data", "synthetic", "--synthetic-size", "64", "--n-real", "16", "--resolution", "16", "--batch-size", "4",
        "--max-steps", "3", "--fid-every", "0", "--sample-every", "2", "--save-every", "2", "--log-every", "1",
        "--ngf", "8", "--ndf", "8", "--latent-dim", "16", "--grid-samples", "4"]

# accelerate's --multi_gpu launcher on a machine without CUDA starts N processes that each train alone unless
# Accelerate is told to use the CPU; until utils/run.py's setup_run does that itself, this wrapper sets the flag.
_CPU_DDP = """
import os, runpy, sys, torch
if not torch.cuda.is_available():
    os.environ["ACCELERATE_USE_CPU"] = "true"
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def start(args: list[str], cache_dir, *, processes: int = 1, plain: bool = False) -> subprocess.Popen:
    entry = str(ROOT / "train_gan.py")
    if plain:
        cmd = [sys.executable, entry]
    else:
        if processes > 1:
            wrapper = Path(cache_dir) / "cpu_ddp_launcher.py"
            wrapper.write_text(_CPU_DDP.format(script=entry))
            entry = str(wrapper)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--num_processes", str(processes)]
        cmd += (["--multi_gpu"] if processes > 1 else []) + [entry]
    env = {**os.environ, "FACEGEN_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "SKIP_EVAL": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd + args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{out[-3000:]}\nSTDERR:\n{err[-5000:]}"
    return out + err


def launch(args: list[str], cache_dir, **kw) -> str:
    return finish(start(args, cache_dir, **kw))


def check_run(run_dir: Path, resolution: int, metric: str) -> None:
    """The export rebuilds from the file alone and samples; logs, curves and grids are there."""
    ex = load_export(run_dir / "export.safetensors", family="gan")
    assert ex.weights == "ema" and ex.step == 3 and ex.model_config["resolution"] == resolution
    x = ex.model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, resolution, resolution) and torch.isfinite(x).all() and x.abs().max() <= 1
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(metric in r and "d_loss" in r and "g_loss" in r for r in train)
    for name in ("samples.png", "loss.png", "samples/step0000002.png", "samples/step0000003.png"):
        assert (run_dir / name).is_file(), name


# ---------------------------------------------------------------------------------------------- flags (fast)

@pytest.mark.parametrize("argv,message", [
    (["--loss", "wgan-gp", "--d-norm", "batch"], "BatchNorm"),
    (["--loss", "bce", "--clip", "0.01"], "--clip applies to --loss wgan-clip only"),
    (["--loss", "hinge", "--label-smoothing", "0.1"], "no meaning"),
    (["--diffaug", "color,blur"], "unknown DiffAugment policy"),
    (["--resolution", "48"], "invalid choice"),
    (["--grad-accum", "2"], "--grad-accum is not supported"),
    (["--attn", "--attn-res", "16"], "--attn is the shorthand"),
    (["--aux-weight", "2"], "--aux-weight applies with --cond-attr only"),
    (["--cond-attr", "Smiling", "--grid-samples", "4"], "--grid-rows"),
    (["--cond-attr", "Moustache"], "synthetic faces have no attribute 'Moustache'"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        gan_flags.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "".join(err)


def test_defaults_follow_the_loss():
    a = gan_flags.parse_args([])
    assert (a.optimizer, a.lr_g, a.lr_d, a.beta1, a.beta2, a.n_critic, a.d_norm) == ("adam", 2e-4, 2e-4, 0.5, 0.999, 1, "batch")
    a = gan_flags.parse_args(["--loss", "wgan-gp"])
    assert (a.lr_g, a.lr_d, a.beta1, a.beta2, a.n_critic, a.d_norm) == (1e-4, 1e-4, 0.0, 0.9, 2, "instance")
    assert gan_flags.parse_args(["--loss", "wgan-gp", "--sn"]).d_norm == "none"
    a = gan_flags.parse_args(["--loss", "wgan-clip", "--lr-d", "1e-4"])
    assert (a.optimizer, a.lr_g, a.lr_d, a.clip, a.n_critic) == ("rmsprop", 5e-5, 1e-4, 0.01, 5)
    cfg = model_config(gan_flags.parse_args(["--attn", "--resolution", "128"]))
    assert cfg.attn_res == [16, 32]
    assert model_config(gan_flags.parse_args(["--attn", "--resolution", "16"])).attn_res == []
    # --attn-res names the sizes itself (as train_ddpm.py's); --attn is its shorthand for the rule above
    assert model_config(gan_flags.parse_args(["--attn-res", "16,8", "--resolution", "64"])).attn_res == [8, 16]
    assert model_config(gan_flags.parse_args([])).attn_res == []


def test_schedules():
    a = gan_flags.parse_args(["--loss", "wgan-clip", "--n-critic-schedule", "wgan"])
    iters = {s: critic_iters(a, s) for s in (0, 49, 50, 498, 499, 500, 998, 999)}
    assert iters == {0: 20, 49: 20, 50: 5, 498: 5, 499: 20, 500: 5, 998: 5, 999: 20}
    a = gan_flags.parse_args(["--lr-schedule", "step", "--lr-gamma", "0.5", "--lr-min", "3e-5"])
    lr = [lr_at(2e-4, s, a, period=10, total=100) for s in (0, 9, 10, 25, 100)]
    assert lr == pytest.approx([2e-4, 2e-4, 1e-4, 5e-5, 3e-5])
    a = gan_flags.parse_args(["--lr-schedule", "exp", "--lr-gamma", "0.5"])
    assert lr_at(1.0, 15, a, period=10, total=100) == pytest.approx(0.5 ** 1.5)
    a = gan_flags.parse_args(["--lr-schedule", "cosine", "--lr-min", "0.1"])
    assert [lr_at(1.0, s, a, period=10, total=100) for s in (0, 50, 100)] == pytest.approx([1.0, 0.55, 0.1])


def script_argv(path: Path) -> list[str]:
    """The train_gan.py flags of a scripts/gan_*.sh row, with $DATA = synthetic and no "$@"."""
    import shlex

    text = path.read_text().replace("\\\n", " ")
    (line,) = [l for l in text.splitlines() if l.startswith("accelerate launch train_gan.py")]
    argv = shlex.split(line.replace('"$DATA"', "synthetic").replace('"$@"', ""))
    return argv[argv.index("train_gan.py") + 1:]


PLAN_ROWS = {  # script: values the plan fixes for that row
    "gan_2.1_dcgan": dict(loss="bce", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, ngf=64, ndf=64, latent_dim=100,
                          resolution=64),
    "gan_2.2_wgan-gp": dict(loss="wgan-gp", lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9, latent_dim=128, n_critic=2,
                            gp_lambda=10.0, resolution=64, sn=False),
    "gan_2.3_wgan-gp-sn-attn": dict(loss="wgan-gp", n_critic=2, latent_dim=128, sn=True, attn=True, g_norm="group",
                                    d_norm="none", resolution=64),
    "gan_2.4_128px": dict(loss="wgan-gp", sn=True, attn=True, g_norm="group", resolution=128),
    "gan_s004_dcgan": dict(loss="bce", optimizer="adam", n_critic=1),
    "gan_s004_wgan-clip": dict(loss="wgan-clip", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, clip=0.01,
                               n_critic_schedule="wgan"),
    "gan_s004_lsgan": dict(loss="lsgan"),
}


def test_row_scripts_parse_with_the_plan_settings():
    scripts = {p.stem: p for p in (ROOT / "scripts").glob("gan_*.sh")}
    assert set(PLAN_ROWS) <= set(scripts)
    for stem, expected in PLAN_ROWS.items():
        text = scripts[stem].read_text()
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text and '"$@"' in text
        args = gan_flags.parse_args(script_argv(scripts[stem]))
        assert {k: getattr(args, k) for k in expected} == expected, stem
        assert f"python evaluate.py --ckpt \"${{OUT:-runs}}/{args.name}/export.safetensors\"" in text
    cfg = model_config(gan_flags.parse_args(script_argv(scripts["gan_2.4_128px"])))
    assert cfg.attn_res == [16, 32]


# ---------------------------------------------------------------------------------------------- real runs

LOSS_RUNS = {  # loss: (extra flags, critic metric); bce runs in the resume test, wgan-gp in the 2-process test
    "lsgan": (["--label-smoothing", "0.1", "--upsample", "bilinear", "--d-norm", "layer",
               "--fid-every", "2", "--fid-extractor", "tiny", "--fid-samples", "16"], "d_acc"),
    "hinge": (["--diffaug", "color,translation,cutout", "--g-norm", "none", "--optimizer", "nesterov",
               "--lr-schedule", "cosine"], "d_acc"),
    "wgan-clip": (["--n-critic-schedule", "wgan", "--aug", "flip-rot-jitter"], "w_dist"),
}


@pytest.fixture(scope="module")
def loss_runs(cache_dir, tmp_path_factory) -> Path:
    """The single-process runs start together: much of each is single-threaded start-up, so they overlap well."""
    out = tmp_path_factory.mktemp("gan-loss-runs")
    procs = [start(TINY + ["--loss", loss, "--out", str(out), "--name", loss] + extra, cache_dir)
             for loss, (extra, _) in LOSS_RUNS.items()]
    for p in procs:
        finish(p)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(LOSS_RUNS))
def test_training_run_per_loss_writes_a_loadable_export(loss, loss_runs):
    check_run(loss_runs / loss, 16, LOSS_RUNS[loss][1])
    assert load_export(loss_runs / loss / "export.safetensors").train_config["loss"] == loss


@pytest.mark.slow
def test_training_fid_is_logged_plotted_and_exported(loss_runs):
    run_dir = loss_runs / "lsgan"
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    fid = [r for r in rows if r["kind"] == "fid"]
    assert [r["step"] for r in fid] == [2] and fid[0]["fid"] > 0 and fid[0]["extractor"] == "tiny"
    assert (run_dir / "fid.png").is_file()
    extra = load_export(run_dir / "export.safetensors").extra
    assert extra["fid"] == pytest.approx(fid[0]["fid"]) and extra["data"]["num_heldout"] == 16


@pytest.mark.slow
def test_wgan_gp_sn_attention_two_processes(cache_dir, tmp_path):
    """DDP (2 CPU processes, gloo) through a double-backward penalty, attention at 16² in G and D, GroupNorm G."""
    args = TINY + ["--loss", "wgan-gp", "--sn", "--attn", "--g-norm", "group", "--upsample", "nearest",
                   "--resolution", "32", "--out", str(tmp_path), "--name", "run"]
    assert "2 process(es)" in launch(args, cache_dir, processes=2)
    check_run(tmp_path / "run", 32, "w_dist")
    ex = load_export(tmp_path / "run" / "export.safetensors")
    assert ex.model_config["attn_res"] == [16] and ex.train_config["loss"] == "wgan-gp"
    assert any(k.endswith("gamma") for k in ex.model.state_dict())
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert all(r["gp"] >= 0 and r["grad_norm"] > 0 for r in rows if r["kind"] == "train")


@pytest.mark.slow
def test_resume_after_interruption_is_bitwise_identical(cache_dir, tmp_path):
    """4 steps straight == 2 steps, stop, --resume latest to 4 (weights, EMA, optimiser, data order, RNG).

    The first half runs under plain `python`, the rest under `accelerate launch`: the entry points are interchangeable.
    """
    common = TINY + ["--loss", "bce", "--out", str(tmp_path), "--n-critic", "2", "--diffaug", "translation"]
    full = start(common + ["--name", "full", "--max-steps", "4"], cache_dir)
    launch(common + ["--name", "part", "--max-steps", "2"], cache_dir, plain=True)
    finish(full)
    launch(common + ["--name", "part", "--max-steps", "4", "--resume", "latest"], cache_dir)
    full = load_export(tmp_path / "full" / "export.safetensors").model.state_dict()
    part = load_export(tmp_path / "part" / "export.safetensors").model.state_dict()
    assert full.keys() == part.keys()
    for k in full:
        assert torch.equal(full[k], part[k]), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_running_means_average_each_key_over_the_period():
    from types import SimpleNamespace

    from utils.tracking import RunningMeans

    rm, one = RunningMeans(), SimpleNamespace(num_processes=1)
    rm.add({"d_loss": torch.tensor(1.0), "ok": torch.tensor(True), "flag": True})
    rm.add({"d_loss": torch.tensor(3.0, requires_grad=True) * 1, "g_loss": torch.tensor([2.0])})
    assert rm.read(one) == {"d_loss": 2.0, "g_loss": 2.0}     # per-key counts; bools and non-tensors skipped
    assert rm.read(one) == {}                                 # a read starts the next period
    rm.add({"x": torch.tensor(1.0)})
    two = SimpleNamespace(num_processes=2, reduce=lambda t, reduction: (t + torch.tensor([5.0])) / 2)
    assert rm.read(two) == {"x": 3.0}                         # one reduction over processes, of the local means


def test_logged_losses_are_means_over_the_log_period(cache_dir, tmp_path, monkeypatch):
    """stats.jsonl's train values at a log step = the mean of what every applied critic/generator update returned
    since the previous log step (recorded here independently of the trainer's bookkeeping)."""
    from accelerate.state import AcceleratorState

    calls = []

    def recording(fn, kind):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            calls.append((kind, {k: float(v) for k, v in out.items() if k != "ok"}))
            return out
        return wrapped

    import utils.gan_training as step_lib   # train_gan.py's step (gan_step) calls these two by module lookup
    monkeypatch.setattr(step_lib, "critic_update", recording(step_lib.critic_update, "d"))
    monkeypatch.setattr(step_lib, "generator_update", recording(step_lib.generator_update, "g"))
    monkeypatch.setenv("FACEGEN_CACHE", str(cache_dir))
    args = [a for a in TINY]
    for flag, value in (("--max-steps", "4"), ("--log-every", "2"), ("--sample-every", "4"), ("--save-every", "4")):
        args[args.index(flag) + 1] = value
    try:
        run_script("train_gan.py", args + ["--loss", "wgan-gp", "--n-critic", "2", "--out", str(tmp_path), "--name", "means"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    steps, current = [], []
    for kind, values in calls:   # a step = its critic updates, then one generator update
        current.append((kind, values))
        if kind == "g":
            steps.append(current)
            current = []
    assert len(steps) == 4 and all(len(s) == 3 for s in steps)
    rows = [json.loads(line) for line in (tmp_path / "means" / "stats.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    for row, period in zip(train, (steps[0:2], steps[2:4])):
        updates = [u for step in period for u in step]
        for key in ("d_loss", "gp", "grad_norm", "w_dist", "g_loss"):
            vals = [v[key] for _, v in updates if key in v]
            assert len(vals) == (2 if key == "g_loss" else 4), key
            assert row[key] == pytest.approx(sum(vals) / len(vals), rel=1e-5, abs=1e-6), (row["step"], key)
        last = period[-1]
        assert row["d_loss"] != pytest.approx(last[-2][1]["d_loss"], rel=1e-9)   # not the single last update
