"""Multi-process runs: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) of each trainer.

* Only the main process writes: the 2-process run directory holds exactly the files of the 1-process run of the
  same config (the uninterrupted ``references`` of tests/conftest.py) plus process 1's RNG state in each
  checkpoint; every step is logged once.
* The data is sharded: the run consumes the same global batches (same data position after 6 steps) and a
  deterministic toy trainer built on the same utilities records, through the real launcher, that the two
  processes' image indices are disjoint and together make up the 1-process batch, step by step.
* The numbers agree: gradients are averaged by DDP, so the deterministic toy ends within 1e-6 of its
  1-process run, also after a SIGTERM to the whole launch (graceful stop under 2 processes) and a resume.
  The real trainers draw their noise (z, ε, t, dropout, GP α) per process from seed + rank (as DiT does), so
  their losses match the 1-process run only statistically — except the VAE's KL at step 1, which is
  noise-free and matches to float precision.
evaluate.py under 2 processes (same FID/KID/PR as 1 process, rel 1e-9) is tested in tests/test_evaluate.py.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.runs import COMMON, FAMILIES, ROOT, STEPS, Proc, base_env, latest_step, train_steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(script: str | Path, *args: str, processes: int = 2) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", str(processes)]
    if processes > 1:  # plain `--cpu --num_processes 2` would silently start ONE process
        cmd += ["--multi_gpu", "--main_process_port", str(free_port())]
    return cmd + [str(script), *args]


def records(run_dir: Path, kind: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == kind]


def files_of(run_dir: Path) -> set[str]:
    """Relative paths of the run directory (TensorBoard event names embed host/pid/time: counted, not named)."""
    out = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and "tb" not in p.parts}
    return out | {f"tb files: {sum(1 for p in (run_dir / 'tb').rglob('*') if p.is_file())}"}


# ------------------------------------------------------------------------------------------------ the trainers

@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, shared_cache, references) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    env = base_env(shared_cache)
    procs = {}
    for family, (script, args) in FAMILIES.items():
        cmd = launch_cmd(ROOT / script, *COMMON, *args, "--max-steps", str(STEPS), "--out", str(root),
                         "--name", family)
        procs[family] = Proc(cmd, env, root / "logs", family)
    for family in FAMILIES:
        references.start(family)
    return {f: (p.ok(600), root / f) for f, p in procs.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_processes_write_once_consume_the_same_batches_and_agree(family, two_process_runs, references):
    proc, run = two_process_runs[family]
    ref = references.get(family)
    assert "2 process(es)" in proc.stdout
    assert json.loads((run / "config.json").read_text())["num_processes"] == 2

    # Only the main process writes: the same files as the 1-process run, plus rank 1's RNG state per checkpoint.
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    rank1 = {f"checkpoints/{c}/random_states_1.pkl" for c in ckpts}
    assert files_of(run) == files_of(ref) | rank1
    assert train_steps(run) == list(range(1, STEPS + 1))                     # each step logged once

    # The same stream of GLOBAL batches (each process took its half of each): same data position.
    state, ref_state = (json.loads((d / "checkpoints" / f"step-{STEPS:08d}" / "train_state.json").read_text())
                        for d in (run, ref))
    assert state["num_processes"] == 2 and state["data"]["world"] == 2 and ref_state["data"]["world"] == 1
    assert {k: v for k, v in state["data"].items() if k != "world"} == \
           {k: v for k, v in ref_state["data"].items() if k != "world"}

    # Step-1 losses: same initial weights (built under --seed) and the same global batch; per-process noise.
    one, two = records(ref)[0], records(run)[0]
    if family == "vae":
        assert two["kl"] == pytest.approx(one["kl"], rel=1e-5)   # no noise in the KL of q(z|x): exact up to rounding
        assert two["rec"] == pytest.approx(one["rec"], rel=0.05)
    elif family == "gan":  # logged after 20 critic updates with per-process z and α: the critic's gradient norm
        assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=0.25)   # at x̂ is ≈ 1 in both
    else:                  # ε-prediction MSE at initialisation, per-process t and ε (measured: 1.158 vs 1.144)
        assert two["loss"] == pytest.approx(one["loss"], rel=0.2)


# ------------------------------------------------------------------------------------------------ deterministic toy

TOY = r'''
"""A noise-free trainer on the shared utilities: 1 and 2 processes must give the same weights (DDP averaging)."""
import argparse, hashlib, json, time
import torch
from torch import nn
from utils.checkpoint import Checkpointer, all_finite
from utils.data import Batches, face_data_from_args, to_uint8
from utils.ema import EMA
from utils.loop import Loop
from utils.run import add_common_args, setup_run

p = argparse.ArgumentParser()
add_common_args(p)
p.add_argument("--step-sleep", type=float, default=0.0)
p.add_argument("--aug", type=str, default="none", choices=["none"])
args = p.parse_args()
run = setup_run(args, "toy", "det")
acc = run.accelerator
data = face_data_from_args(args)
index_of = {hashlib.sha1(img.numpy().tobytes()).hexdigest(): i for i, img in enumerate(data.train)}
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(args.seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1))
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
ema = EMA(net, 0.9)
net, opt = acc.prepare(net, opt)
batches = Batches(data.train, args.batch_size, seed=args.seed, rank=acc.process_index, world=acc.num_processes,
                  device=run.device)
loop = Loop(run, batches, Checkpointer(run, {"ema": ema}, batches))
loop.resume()
for x in loop:
    idx = torch.tensor([index_of[hashlib.sha1(img.numpy().tobytes()).hexdigest()] for img in to_uint8(x).cpu()])
    loss = (net(x) - x.flip(-1)).pow(2).mean()
    opt.zero_grad()
    acc.backward(loss)
    opt.step()
    if not loop.tick(all_finite(loss)):
        continue
    ema.update(acc.unwrap_model(net))
    shards = acc.gather(idx[None]).tolist()           # one row per process
    if run.is_main:
        with open(run.path("shards.jsonl"), "a") as f:
            f.write(json.dumps({"step": loop.step, "shards": shards, "loss": loss.item()}) + "\n")
    time.sleep(args.step_sleep)
    if loop.due("save"):
        loop.save()
loop.finish()
if run.is_main:
    from safetensors.torch import save_file
    weights = {k: v.contiguous() for k, v in acc.unwrap_model(net).state_dict().items()}
    save_file({**weights, **{"ema." + k: v.contiguous() for k, v in ema.module.state_dict().items()}},
              str(run.path("final.safetensors")))
'''
TOY_STEPS = 24   # two epochs of 12 global batches; the 2-process stop check runs every 10 steps


def test_deterministic_toy_matches_one_process_through_sigterm_and_resume(shared_cache, tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "toy_train.py"
    script.write_text(TOY)
    common = [*COMMON, "--max-steps", str(TOY_STEPS), "--save-every", "5", "--out", str(tmp_path)]
    env = base_env(shared_cache)
    one = Proc([sys.executable, str(script), *common, "--name", "one"], env, tmp_path / "logs", "one")
    run = tmp_path / "two"
    two_cmd = launch_cmd(script, *common, "--name", "two", "--step-sleep", "0.15")
    # A new session: the signal goes to the launcher and both workers at once, as Ctrl-C or SLURM would send it.
    first = Proc(two_cmd, env, tmp_path / "logs", "two-first", new_session=True)
    first.until(lambda: latest_step(run) >= 5, "checkpoint 5")
    os.killpg(first.p.pid, signal.SIGTERM)
    first.wait(120)
    stopped = latest_step(run)
    assert 5 < stopped < TOY_STEPS and stopped % 10 == 0, stopped   # agreed at a stop-check step, then saved
    assert f"stopped at step {stopped}; continue with the same command plus --resume latest" in first.stdout
    ckpt = run / "checkpoints" / f"step-{stopped:08d}"
    assert {"random_states_0.pkl", "random_states_1.pkl", "train_state.json"} <= {p.name for p in ckpt.iterdir()}

    second = Proc(two_cmd + ["--resume", "latest"], env, tmp_path / "logs", "two-second").ok()
    assert f"resumed from {ckpt} at step {stopped}" in second.stdout
    one.ok()

    a, b = load_file(str(tmp_path / "one" / "final.safetensors")), load_file(str(run / "final.safetensors"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert a.keys() == b.keys() and diff < 1e-6, diff          # not bitwise: the all-reduce sums in another order

    shard_one = [json.loads(line) for line in (tmp_path / "one" / "shards.jsonl").read_text().splitlines()]
    shard_two = [json.loads(line) for line in (run / "shards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in shard_two] == [r["step"] for r in shard_one] == list(range(1, TOY_STEPS + 1))
    for r1, r2 in zip(shard_one, shard_two):
        (global_batch,), (rank0, rank1) = r1["shards"], r2["shards"]
        assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)
        assert rank0 + rank1 == global_batch                    # process r takes the r-th slice of the global batch
