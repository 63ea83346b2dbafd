"""train_ddpm.py: flag checks and loss bookkeeping in-process; every plan row (scripts/ddpm_*.sh) through
`accelerate launch` on CPU at 16–32 px (one of them on 2 processes, one with training-time FID), and an exact
resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import ddpm_flags, ddpm_training
from utils.export import load_export

ROOT = Path(__file__).resolve().parents[1]

# Tiny UNet (base 16, one block per level) and 5 DDIM steps for grids: the runs check plumbing, not quality.
TINY = ["--synthetic-size", "64", "--n-real", "16", "--resolution", "16", "--batch-size", "4", "--max-steps", "3",
        "--fid-every", "0", "--sample-every", "2", "--save-every", "2", "--log-every", "1", "--base-channels", "16",
        "--layers-per-block", "1", "--grid-samples", "4", "--sample-steps", "5", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def env(cache_dir, tmp_path_factory) -> dict:
    # An empty HF_HOME: no accelerate config of the machine's user changes how the runs launch.
    return {**os.environ, "FACEGEN_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "SKIP_EVAL": "1", "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
            "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `accelerate` of this venv


def start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args}\nexit {proc.returncode}\nSTDOUT:\n{out[-3000:]}\nSTDERR:\n{err[-5000:]}"
    return out


def script_cmd(script: str, args: list[str]) -> list[str]:
    return ["bash", str(ROOT / "scripts" / script)] + args


def launch_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--num_processes", "1", str(ROOT / "train_ddpm.py")] + args


def check_run(run_dir: Path, *, resolution: int, schedule: str, prediction: str, attention: tuple, steps: int = 3):
    """The export rebuilds from the file alone and samples; the diffusers folder loads; logs and grids exist."""
    from diffusers import DDIMPipeline

    ex = load_export(run_dir / "export.safetensors", family="ddpm")
    cfg = ex.model.config
    assert ex.weights == "ema" and ex.step == steps and cfg.resolution == resolution
    assert (cfg.beta_schedule, cfg.prediction_type, cfg.attention_levels) == (schedule, prediction, attention)
    assert ex.extra["sampler"]["steps"] == 5 and ex.extra["sampler"]["timestep_spacing"] == "trailing"
    x = ex.model.sample(2, generator=torch.Generator().manual_seed(0), steps=4)
    assert x.shape == (2, 3, resolution, resolution) and torch.isfinite(x).all() and x.abs().max() <= 1

    pipe = DDIMPipeline.from_pretrained(str(run_dir / "diffusers"))
    pipe.set_progress_bar_config(disable=True)
    y = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="pt").images
    torch.testing.assert_close(y * 2 - 1, x, rtol=0, atol=1e-5)  # same weights, same DDIM, same noise

    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    quartiles = ddpm_training.quartile_keys(1000)
    assert all(k in r for r in train for k in quartiles + ["grad_norm", "lr", "img_per_s"])
    assert all(0 < r["loss"] < 10 for r in train)
    sidecar = json.loads((run_dir / "samples" / "step0000002.json").read_text())
    assert (sidecar["sampler"], sidecar["steps"], sidecar["set_alpha_to_one"]) == ("ddim", 5, True)
    for name in ("samples.png", "loss.png", "samples/step0000002.png", "config.json", "diffusers/unet/config.json"):
        assert (run_dir / name).is_file(), name


# ---------------------------------------------------------------------------------------------- flags (fast)

@pytest.mark.parametrize("argv,message", [
    (["--grad-accum", "2"], "does not accumulate gradients"),
    (["--attn-res", "8,x"], "comma-separated integers"),
    (["--resolution", "16", "--channel-mult", "1,2,2,2,2"], "below 2²"),
    (["--beta-schedule", "sigmoid"], "invalid choice"),
    (["--attn-head-dim", "48"], "does not divide"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        ddpm_flags.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "".join(err)


def test_defaults_are_the_plans():
    a = ddpm_flags.parse_args([])
    cfg = ddpm_training.model_config(a)
    assert (a.lr, a.sample_steps, a.ema_decay, a.batch_size) == (2e-4, 100, 0.9999, 64)
    assert (cfg.base_channels, cfg.num_train_timesteps, cfg.beta_schedule, cfg.prediction_type) == \
        (128, 1000, "linear", "epsilon")
    assert cfg.attention_levels == (16, 8)


def test_warmup_and_quartile_bookkeeping():
    a = ddpm_flags.parse_args(["--warmup-steps", "4", "--lr", "1e-3"])
    assert [ddpm_training.lr_at(s, a) for s in (0, 1, 3, 10)] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3])

    class OneProcess:
        @staticmethod
        def reduce(x, reduction):
            return x

    q = ddpm_training.QuartileLoss(1000, "cpu")
    q.add(torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]), torch.tensor([0, 249, 250, 999, 998]))
    out = q.read_and_reset(OneProcess)
    assert out["loss"] == pytest.approx(5.0)
    assert (out["loss_t0-250"], out["loss_t250-500"], out["loss_t750-1000"]) == pytest.approx((2.0, 5.0, 8.0))
    assert out["loss_t500-750"] != out["loss_t500-750"]  # NaN: no sample fell in that quartile
    assert q.read_and_reset(OneProcess)["loss"] == 0.0  # reset after reading


# ---------------------------------------------------------------------------------------------- real runs

FID = ["--fid-every", "2", "--fid-extractor", "tiny", "--fid-samples", "16", "--fid-sample-steps", "3"]
ROWS = [  # script, extra flags, resolution, schedule, prediction, attention levels that exist
    ("ddpm_4.1_linear-eps.sh", [], 16, "linear", "epsilon", (16, 8)),
    ("ddpm_4.2_cosine.sh", FID, 16, "cosine", "epsilon", (16, 8)),
    ("ddpm_4.3_vpred.sh", ["--mixed-precision", "bf16"], 16, "cosine", "v_prediction", (16, 8)),  # 2 processes
    ("ddpm_4.4_wide.sh", ["--resolution", "32"], 32, "cosine", "v_prediction", (32, 16, 8)),
]
TWO_PROCESS_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: false
main_training_function: main
"""
RESUME = TINY + ["--beta-schedule", "cosine", "--prediction-type", "v_prediction", "--name", "r"]


@pytest.fixture(scope="module")
def runs(env, tmp_path_factory) -> Path:
    """All runs start together: much of each is single-threaded start-up (imports, data), so they overlap well.

    * every plan row through its script (`accelerate launch` inside), tiny settings; row 4.3 under a user's
      accelerate config for 2 processes (DDP over gloo: ACCELERATE_USE_CPU, because without CUDA a multi-GPU
      launch would otherwise start 2 lone runs);
    * resume: 4 steps straight, and 2 steps then `--resume latest` to 4.
    """
    out = tmp_path_factory.mktemp("ddpm-runs")
    hf_home = out / "hf-home"
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text(TWO_PROCESS_CONFIG)
    two_process_env = {**env, "HF_HOME": str(hf_home), "ACCELERATE_USE_CPU": "true"}
    procs = {script: start(script_cmd(script, TINY + extra + ["--out", str(out / "rows")]),
                           two_process_env if script == "ddpm_4.3_vpred.sh" else env)
             for script, extra, *_ in ROWS}
    four = ["--max-steps", "4", "--export-every", "0"]
    procs["straight"] = start(launch_cmd(RESUME + four + ["--out", str(out / "straight")]), env)
    procs["part"] = start(launch_cmd(RESUME + ["--max-steps", "2", "--out", str(out / "resumed")]), env)
    logs = {name: finish(p) for name, p in procs.items()}
    logs["resumed"] = finish(start(launch_cmd(RESUME + four + ["--out", str(out / "resumed"), "--resume", "latest"]),
                                   env))
    (out / "logs.json").write_text(json.dumps(logs))
    return out


def logs(runs: Path) -> dict:
    return json.loads((runs / "logs.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("script,extra,resolution,schedule,prediction,attention", ROWS)
def test_plan_row_runs_and_exports(script, extra, resolution, schedule, prediction, attention, runs):
    name = script.removesuffix(".sh").replace("_", "-")
    check_run(runs / "rows" / name, resolution=resolution, schedule=schedule, prediction=prediction,
              attention=attention)
    assert "done: 3 steps" in logs(runs)[script]
    text = (ROOT / "scripts" / script).read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text and '"$@"' in text
    assert f"python evaluate.py --ckpt \"${{OUT:-runs}}/{name}/export.safetensors\" --sample-steps 100" in text


@pytest.mark.slow
def test_training_fid_is_logged_and_exported(runs):
    """Row 4.2 ran with FID every 2 steps (tiny extractor, 3 DDIM steps): logged, plotted, stored in the export."""
    run_dir = runs / "rows" / "ddpm-4.2-cosine"
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    fid = [r for r in rows if r["kind"] == "fid"]
    assert [r["step"] for r in fid] == [2] and fid[0]["fid"] > 0 and fid[0]["extractor"] == "tiny"
    assert (run_dir / "fid.png").is_file()
    extra = load_export(run_dir / "export.safetensors").extra
    assert extra["fid"] == pytest.approx(fid[0]["fid"])
    assert extra["fid_sampler"]["steps"] == 3 and extra["sampler"]["steps"] == 5


@pytest.mark.slow
def test_row_script_follows_the_users_accelerate_config(runs):
    """Row 4.3 ran under a 2-process accelerate config: DDP with bf16 autocast (its export is checked above)."""
    log = logs(runs)["ddpm_4.3_vpred.sh"]
    assert "2 process(es)" in log and "mixed precision bf16" in log
    assert "1 process(es)" in logs(runs)["ddpm_4.1_linear-eps.sh"]


@pytest.mark.slow
def test_resume_is_bitwise_identical(runs):
    """Stopped at step 2 and resumed to 4 == 4 steps straight (weights, EMA, AdamW, data order, RNG, lr warm-up)."""
    assert "resumed from" in logs(runs)["resumed"]
    a = load_export(runs / "straight" / "r" / "export.safetensors").model.state_dict()
    b = load_export(runs / "resumed" / "r" / "export.safetensors").model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (runs / "resumed" / "r" / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
