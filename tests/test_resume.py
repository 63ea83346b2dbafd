"""Never lose a run: exact resume after SIGKILL, a kill in the middle of a save, graceful SIGTERM,
the non-finite guard, and the checkpoint directory's invariants.

The end-to-end tests run the real trainers (`python train_x.py`, CPU, 16 px, batch 4, 6 steps, a checkpoint
every step) and compare the final export and the step-6 resume state with an uninterrupted run of the same
command: every tensor must be bitwise equal (CPU kernels here are deterministic, so no tolerance is used).
Timing-dependent kills are made deterministic by FACEGEN_TEST_SAVE_PAUSE (utils/checkpoint.py): each save
pauses after its weights are in the temporary directory and before ``train_state.json`` is written.

The helpers and the tiny per-family configs are in tests/runs.py; the reference runs, the shared data cache and
the in-process ``tiny_run`` are fixtures of tests/conftest.py.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.runs import STEPS, Proc, base_env, family_cmd, latest_step, train_step, train_steps


# ------------------------------------------------------------------------------------------------ helpers

def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file, flattened: safetensors directly, Accelerate's .bin files safely."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    out = {}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = obj
    walk("", torch.load(path, map_location="cpu", weights_only=True))
    return out


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), \
                f"{what}: {k} differs (max abs diff {(a[k].double() - b[k].double()).abs().max().item():.3g})"
        else:
            assert a[k] == b[k], f"{what}: {k}: {a[k]!r} != {b[k]!r}"


def assert_bitwise_equal_runs(ref: Path, run: Path, step: int = STEPS) -> int:
    """Final export and every model/EMA/optimizer tensor of the resume state are identical; returns #tensors."""
    from utils.export import load_export

    n = 0
    a, b = load_export(ref / "export.safetensors").model.state_dict(), load_export(run / "export.safetensors").model.state_dict()
    assert_same_tensors(a, b, "export")
    n += len(a)
    ckpt = f"checkpoints/step-{step:08d}"
    files = sorted(p.name for p in (ref / ckpt).iterdir() if p.suffix in (".safetensors", ".bin"))
    assert any(f.startswith("optimizer") for f in files) and "ema.safetensors" in files, files
    for name in files:
        a, b = tensors_of(ref / ckpt / name), tensors_of(run / ckpt / name)
        assert_same_tensors(a, b, f"{ckpt}/{name}")
        n += len(a)
    sa, sb = (json.loads((d / ckpt / "train_state.json").read_text()) for d in (ref, run))
    assert sa["data"] == sb["data"] and sa["step"] == sb["step"] == step and sa["extra"] == sb["extra"]
    return n


# ------------------------------------------------------------------------------------------------ exact resume

def test_gan_sigkill_then_sigterm_then_resume_is_bitwise_identical(references, shared_cache, tmp_path):
    """WGAN-GP, n-critic schedule: SIGKILL at ≥ step 2, resume, SIGTERM a step later, resume to 6 == straight 6."""
    references.start("gan")
    run = tmp_path / "gan"
    slow = base_env(shared_cache, FACEGEN_TEST_SAVE_PAUSE="0.3")   # ~0.3 s per step: time to act between steps

    first = Proc(family_cmd("gan", tmp_path, "gan"), slow, tmp_path / "logs", "first")
    first.until(lambda: latest_step(run) >= 2, "checkpoint 2")
    first.p.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    killed_at = latest_step(run)
    assert 2 <= killed_at < STEPS

    second = Proc(family_cmd("gan", tmp_path, "gan", "--resume", "latest"), slow, tmp_path / "logs", "second")
    second.until(lambda: latest_step(run) >= killed_at + 1, f"checkpoint {killed_at + 1}")
    second.p.send_signal(signal.SIGTERM)
    second.ok()
    assert f"resumed from {run / 'checkpoints' / f'step-{killed_at:08d}'}" in second.stdout
    stopped = latest_step(run)
    assert stopped < STEPS, "the run finished before SIGTERM arrived"
    assert f"received SIGTERM" in second.stdout
    assert f"stopped at step {stopped}; continue with the same command plus --resume latest" in second.stdout
    assert (run / "checkpoints" / f"step-{stopped:08d}" / "train_state.json").is_file()
    assert "Traceback" not in second.stderr

    Proc(family_cmd("gan", tmp_path, "gan", "--resume", "latest"), base_env(shared_cache), tmp_path / "logs", "third").ok()
    assert assert_bitwise_equal_runs(references.get("gan"), run) > 20
    assert train_steps(run) == list(range(1, STEPS + 1))   # the resumed logs have no duplicate or missing step


def test_vae_sigkill_before_discriminator_start_resumes_bitwise(references, shared_cache, tmp_path):
    """Killed before --disc-start 4; the resumed run switches the PatchGAN on and matches the straight run."""
    references.start("vae")
    run = tmp_path / "vae"
    first = Proc(family_cmd("vae", tmp_path, "vae"), base_env(shared_cache, FACEGEN_TEST_SAVE_PAUSE="0.3"),
                 tmp_path / "logs", "first")
    first.until(lambda: latest_step(run) >= 2, "checkpoint 2")
    first.p.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    killed_at = latest_step(run)
    assert 2 <= killed_at < 4, "the kill must come before the discriminator starts"

    second = Proc(family_cmd("vae", tmp_path, "vae", "--resume", "latest"), base_env(shared_cache), tmp_path / "logs",
                  "second").ok()
    assert f"at step {killed_at}" in second.stdout
    assert_bitwise_equal_runs(references.get("vae"), run)
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert [("d_loss" in r) for r in train] == [r["step"] > 4 for r in train]  # D on from step index 4


def test_ddpm_kill_inside_a_save_leaves_latest_complete_and_resumes_bitwise(references, shared_cache, tmp_path):
    """SIGKILL while a checkpoint directory is half written: it is ignored, `latest` stays on the previous
    complete checkpoint, the resumed run removes the leftover and ends bitwise equal to the straight run."""
    references.start("ddpm")
    run, ckpts = tmp_path / "ddpm", tmp_path / "ddpm" / "checkpoints"
    first = Proc(family_cmd("ddpm", tmp_path, "ddpm"), base_env(shared_cache, FACEGEN_TEST_SAVE_PAUSE="1.5"),
                 tmp_path / "logs", "first")
    partial = ckpts / ".step-00000003.tmp"
    first.until(lambda: (partial / "ema.safetensors").exists(), "the half-written checkpoint 3")
    first.p.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert (partial / "model.safetensors").is_file() and not (partial / "train_state.json").exists()
    assert latest_step(run) == 2 and not (ckpts / "step-00000003").exists()
    # Even with `latest` damaged, the newest COMPLETE checkpoint is chosen, never the partial one.
    (ckpts / "latest").write_text("garbage\n")

    second = Proc(family_cmd("ddpm", tmp_path, "ddpm", "--resume", "latest"), base_env(shared_cache),
                  tmp_path / "logs", "second").ok()
    assert f"resumed from {ckpts / 'step-00000002'} at step 2" in second.stdout
    assert not partial.exists()                        # leftovers are removed by the next save
    assert_bitwise_equal_runs(references.get("ddpm"), run)
    assert train_steps(run) == list(range(1, STEPS + 1))


def test_resumed_log_has_each_step_once_and_the_last_fid_comes_back(shared_cache, tmp_path):
    """The one log rule of every trainer (utils/trainer_setup.open_loop), through the VAE's command line: a fresh run
    empties a stale log; a run resumed from an earlier checkpoint than its last drops the records after it, so each
    step is logged once and in order; the last training-time FID (step 2) comes back with the checkpoint, so the
    export at step 3 still carries it."""
    from utils.export import load_export

    run = tmp_path / "vae"
    run.mkdir()
    (run / "stats.jsonl").write_text('{"kind": "train", "step": 1, "loss": 9.0}\n')  # killed before its 1st checkpoint
    fid_flags = ["--fid-every", "2", "--fid-extractor", "tiny", "--fid-samples", "16"]
    env, logs = base_env(shared_cache), tmp_path / "logs"
    Proc(family_cmd("vae", tmp_path, "vae", *fid_flags, steps=3), env, logs, "first").ok()
    first = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert train_steps(run) == [1, 2, 3] and all(r.get("loss") != 9.0 for r in first)
    (fid,) = [r["fid"] for r in first if r["kind"] == "fid" and r["step"] == 2]

    step2 = run / "checkpoints" / "step-00000002"   # the log already holds step 3: its records must go
    second = Proc(family_cmd("vae", tmp_path, "vae", *fid_flags, "--resume", str(step2), steps=3), env, logs,
                  "second").ok()
    assert "at step 2" in second.stdout
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    # eval 0, train 1, train 2, fid 2, train 3, eval 3: the first run's records, none twice
    assert [(r["kind"], r["step"]) for r in rows] == [(r["kind"], r["step"]) for r in first]
    assert train_steps(run) == [1, 2, 3] and [r["step"] for r in rows if r["kind"] == "fid"] == [2]
    assert load_export(run / "export.safetensors").extra["fid"] == fid
    assert json.loads((run / "checkpoints" / "step-00000003" / "train_state.json").read_text())["last_fid"] == fid


def test_compiled_vae_resumes_bitwise_with_the_plain_checkpoint_keys(references, shared_cache, tmp_path):
    """--compile compiles in place (utils/trainer_setup.prepare_models): a compiled run's checkpoint has the keys of a
    plain run's (no `_orig_mod.`), and 2 compiled steps + --resume to 4 == 4 compiled steps straight, bitwise.
    Compiling the tiny VAE takes ~30 s on a 2-core CPU; the runs share one Inductor cache of the test's own."""
    references.start("vae")
    env, logs = base_env(shared_cache, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor")), tmp_path / "logs"
    straight = Proc(family_cmd("vae", tmp_path, "straight", "--compile", steps=4), env, logs, "straight")
    Proc(family_cmd("vae", tmp_path, "vae", "--compile", steps=2), env, logs, "first").ok()
    second = Proc(family_cmd("vae", tmp_path, "vae", "--compile", "--resume", "latest", steps=4), env, logs,
                  "second").ok()
    straight.ok()
    run, ckpt = tmp_path / "vae", "checkpoints/step-00000004"
    assert f"resumed from {run / 'checkpoints' / 'step-00000002'} at step 2" in second.stdout
    assert_bitwise_equal_runs(tmp_path / "straight", run, step=4)
    plain = references.get("vae")
    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):
        assert tensors_of(run / ckpt / name).keys() == tensors_of(plain / ckpt / name).keys(), name
    assert train_steps(run) == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------ non-finite guard

NAN_CONFIGS = {  # one batch per step everywhere; the VAE with BatchNorm, whose statistics a NaN batch would poison
    "gan": ["--n-critic-schedule", "constant", "--n-critic", "1"],
    "vae": ["--norm", "batch"],
    "ddpm": [],
}


@pytest.fixture(scope="module")
def nan_runs(tmp_path_factory, shared_cache) -> dict:
    """Stream positions 1 (one bad step) and 4, 5, 6 (three in a row = --max-bad-steps) are NaN batches."""
    root = tmp_path_factory.mktemp("nan")
    env = base_env(shared_cache, FACEGEN_INJECT_NAN_AT="1,4,5,6")
    procs = {f: Proc(family_cmd(f, root, f, *extra, "--max-bad-steps", "3", "--save-every", "2"), env,
                     root / "logs", f) for f, extra in NAN_CONFIGS.items()}
    return {f: (p.wait(), p, root / f) for f, p in procs.items()}


@pytest.mark.parametrize("family", list(NAN_CONFIGS))
def test_non_finite_steps_are_skipped_then_stop_with_a_good_checkpoint(nan_runs, family):
    rc, proc, run = nan_runs[family]
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert rc == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert err_lines[-1].startswith("error: 3 non-finite steps in a row at step 3; stopping; the last good state "
                                    "is checkpoint"), err_lines[-1]
    assert "--resume latest" in err_lines[-1]
    assert "update skipped (1 in a row, 1 total)" in proc.stdout          # the isolated bad batch
    assert "update skipped (3 in a row, 4 total)" in proc.stdout
    assert train_steps(run) == [1, 2, 3]                                  # skipped steps are not counted
    step3 = run / "checkpoints" / "step-00000003"
    assert latest_step(run) == 3
    state = json.loads((step3 / "train_state.json").read_text())
    assert state["bad_total"] == 4 and state["data"]["index"] == 7        # 3 used + 4 NaN batches drawn
    for f in step3.glob("*.safetensors"):                                 # models, discriminator, EMA
        for k, t in tensors_of(f).items():
            assert torch.isfinite(t.float()).all(), f"{f.name}: {k} is not finite (a skipped update leaked)"


# ------------------------------------------------------------------------------------------------ out of memory

def test_out_of_memory_is_one_line_and_the_run_resumes(shared_cache, tmp_path):
    """torch's CUDA OOM error (injected at the 4th batch, on CPU) ends the run with one line naming what to lower
    and the checkpoint to continue from; --resume latest then finishes the run."""
    cmd = family_cmd("ddpm", tmp_path, "oom", "--save-every", "2")
    first = Proc(cmd, base_env(shared_cache, FACEGEN_INJECT_OOM_AT="3"), tmp_path / "logs", "first")
    rc = first.wait()
    err_lines = [line for line in first.stderr.splitlines() if line.strip()]
    assert rc == 1 and "Traceback" not in first.stderr, first.stderr[-3000:]
    assert err_lines[-1].startswith("error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"), err_lines
    assert "--batch-size 4 at 16x16" in err_lines[-1] and "lower --batch-size" in err_lines[-1]
    assert "continue from checkpoint step-00000002 with the same command and --resume latest" in err_lines[-1]
    assert latest_step(tmp_path / "oom") == 2
    Proc([*cmd, "--resume", "latest"], base_env(shared_cache), tmp_path / "logs", "resumed").ok()
    assert latest_step(tmp_path / "oom") == STEPS and train_steps(tmp_path / "oom")[-1] == STEPS


# ------------------------------------------------------------------------------------------------ checkpoint dir (in-process)

def test_rotation_keeps_last_k_and_latest_ignores_partial_or_damaged_state(tiny_run):
    t = tiny_run
    for step in range(1, 6):
        train_step(t)
        t.ckpt.save({"step": step, "extra": {}})
    ckpts = t.ckpt.dir
    assert [p.name for p in t.ckpt.complete_checkpoints()] == ["step-00000003", "step-00000004", "step-00000005"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-00000003", "step-00000004", "step-00000005"]
    assert t.ckpt.find("latest") == ckpts / "step-00000005"

    # What kills leave behind: a half-written save, a half-deleted rotation victim, a damaged pointer.
    (ckpts / ".step-00000006.tmp").mkdir()
    (ckpts / ".step-00000006.tmp" / "model.safetensors").write_bytes(b"partial")
    (ckpts / ".step-00000002.del").mkdir()
    (ckpts / ".step-00000002.del" / "train_state.json").write_text('{"step": 2}')
    (ckpts / "step-00000009").mkdir()                        # no train_state.json: incomplete, never chosen
    assert t.ckpt.find("latest") == ckpts / "step-00000005"
    for pointer in ("step-00000009\n", "../../../etc\n", "\x00\xff", ""):
        (ckpts / "latest").write_bytes(pointer.encode("latin-1"))
        assert t.ckpt.find("latest") == ckpts / "step-00000005", pointer
    (ckpts / "latest").unlink()
    assert t.ckpt.find("latest") == ckpts / "step-00000005"

    train_step(t)
    t.ckpt.save({"step": 6, "extra": {}})                   # the next save clears the leftovers
    assert not any(p.name.startswith(".") for p in ckpts.iterdir())
    assert t.ckpt.find("latest") == ckpts / "step-00000006"
    with pytest.raises(SystemExit, match=r"^error: .* is not a complete checkpoint directory"):
        t.ckpt.find(str(ckpts / "step-00000009"))


def test_resume_restores_weights_optimizer_ema_data_and_rng(tiny_run):
    t = tiny_run
    train_step(t)
    t.ckpt.save({"step": 1, "extra": {"n_critic": 5}})
    saved = {k: v.clone() for k, v in t.net.state_dict().items()}
    ema_saved = {k: v.clone() for k, v in t.ema.module.state_dict().items()}
    data_saved, rng_saved = t.batches.state_dict(), torch.get_rng_state()
    expected_next = torch.randn(3)
    for _ in range(3):                                       # move everything on
        train_step(t)
    t.run.args.resume = "latest"
    state = t.ckpt.resume()
    assert state["step"] == 1 and state["extra"] == {"n_critic": 5} and state["num_processes"] == 1
    assert_same_tensors(saved, t.net.state_dict(), "model")
    assert_same_tensors(ema_saved, t.ema.module.state_dict(), "ema")
    assert t.ema.num_updates == 1 and t.batches.state_dict() == data_saved
    assert torch.equal(torch.get_rng_state(), rng_saved) and torch.equal(torch.randn(3), expected_next)
    assert t.opt.state_dict()["state"][0]["step"].item() == 1


def test_damaged_checkpoint_is_a_one_line_error(tiny_run):
    t = tiny_run
    train_step(t)
    path = t.ckpt.save({"step": 1, "extra": {}})
    model = path / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])              # truncated
    t.run.args.resume = "latest"
    with pytest.raises(SystemExit) as e:
        t.ckpt.resume()
    msg = str(e.value.code)
    assert msg.startswith(f"error: cannot resume from {path}:") and "\n" not in msg
    (path / "train_state.json").write_text('{"no": "step"}')
    with pytest.raises(SystemExit, match="train_state.json has no valid step"):
        t.ckpt.resume()


def test_lost_random_states_are_reported_not_ignored(tiny_run, capsys):
    """Accelerate only logs (INFO) when it cannot restore RNG states; resume must not silently differ."""
    t = tiny_run
    train_step(t)
    path = t.ckpt.save({"step": 1, "extra": {}})
    t.run.args.resume = "latest"
    rng = path / "random_states_0.pkl"
    good = rng.read_bytes()
    rng.write_bytes(good[: len(good) // 2])                  # damaged: accelerate swallows the error
    with pytest.raises(SystemExit, match=r"^error: cannot read random states"):
        t.ckpt.resume()
    rng.unlink()                                             # e.g. resumed with more processes than saved
    assert t.ckpt.resume()["step"] == 1
    assert "has no random state for process 0" in capsys.readouterr().out


def test_step_if_finite_skips_the_update_on_non_finite_gradients(tiny_run):
    from utils.checkpoint import step_if_finite

    t = tiny_run
    before = [p.detach().clone() for p in t.net.parameters()]
    loss = t.net(t.batches.next() * float("inf")).pow(2).mean()
    t.opt.zero_grad()
    t.run.accelerator.backward(loss)
    assert step_if_finite(t.run.accelerator, t.opt, t.net) is False
    assert all(torch.equal(a, b) for a, b in zip(before, t.net.parameters()))
    assert not t.opt.state                                   # Adam never saw the step
    loss = t.net(t.batches.next()).pow(2).mean()
    t.opt.zero_grad()
    t.run.accelerator.backward(loss)
    assert step_if_finite(t.run.accelerator, t.opt, t.net) is True and t.opt.state


def test_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tiny_run, monkeypatch):
    import errno

    import utils.export
    from utils.export import atomic_write_bytes

    t = tiny_run
    train_step(t)
    first = t.ckpt.save({"step": 1, "extra": {}})
    train_step(t)
    real_save_state = t.run.accelerator.save_state

    def save_state_then_disk_full(path, **kw):
        real_save_state(path, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(t.run.accelerator, "save_state", save_state_then_disk_full)
    with pytest.raises(SystemExit, match=r"^error: No space left on device while writing .*\.step-00000002\.tmp; "
                                         r"nothing was overwritten") as e:
        t.ckpt.save({"step": 2, "extra": {}})
    assert "\n" not in str(e.value.code)
    assert sorted(p.name for p in t.ckpt.dir.iterdir()) == ["latest", first.name]   # partial directory removed
    assert t.ckpt.find("latest") == first

    target = t.ckpt.dir / "note.txt"
    atomic_write_bytes(target, b"old")

    def fsync_disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(utils.export.os, "fsync", fsync_disk_full)
    with pytest.raises(SystemExit, match=r"^error: No space left on device while writing .*note\.txt"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and not list(t.ckpt.dir.glob(".note.txt.tmp*"))


def test_second_signal_within_the_repeat_window_is_the_same_request(monkeypatch):
    """Ctrl-C / SLURM signal the launcher and the workers, and torchrun forwards SIGTERM again: one stop request.
    A signal after the window is a user insisting: exit at once, with one line."""
    import utils.checkpoint as ck

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        flag = ck.graceful_stop_handler()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)                # within the window: ignored
        assert flag["stop"]
        monkeypatch.setattr(ck, "REPEAT_WINDOW_S", 0.0)
        with pytest.raises(SystemExit, match=r"^error: second SIGTERM: stopped without saving"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_stats_log_resume_drops_the_tail_and_torn_lines(tmp_path, monkeypatch):
    """A kill mid-append leaves half a JSON line; resuming from step 2 must drop it and everything after step 2,
    and the next record must be a line of its own."""
    import types

    import utils.tracking
    from utils.tracking import StatsLog, read_stats

    run = types.SimpleNamespace(is_main=True, path=lambda name: tmp_path / name,
                                accelerator=types.SimpleNamespace(log=lambda *a, **k: None))
    log = StatsLog(run)
    for step in (1, 2, 3):
        log.log(step, {"loss": float(step)})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "lo')                              # torn by a kill
    log.truncate_after(2)
    log.log(3, {"loss": 30.0})
    assert [(r["step"], r["loss"]) for r in read_stats(log.path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert all(json.loads(line) for line in log.path.read_text().splitlines())

    def killed(path, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(utils.tracking, "atomic_write_bytes", killed)
    before = log.path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        log.truncate_after(1)
    assert log.path.read_bytes() == before                     # the old log survives a kill during the rewrite
