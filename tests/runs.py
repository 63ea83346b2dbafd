"""Tiny trainer runs as subprocesses, shared by the reliability, multi-process, safety and bad-input tests.

``FAMILIES`` holds one tiny config per family (CPU, 16 px, batch 4, ``STEPS`` steps, a checkpoint every step);
``Proc`` runs a command with its output in files; ``run_script`` runs an entry point's command line in this process
(where a test monkeypatches library code); ``References`` holds the uninterrupted runs the tests compare against (the
``references`` fixture of tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
COMMON = ["--data", "synthetic", "--synthetic-size", "64", "--n-real", "16", "--resolution", "16", "--batch-size", "4",
          "--fid-every", "0", "--sample-every", "0", "--log-every", "1", "--save-every", "1", "--export-every", "0",
          "--aug", "none", "--keep-checkpoints", "8"]
# No BatchNorm anywhere (group/instance/none) so that the same configs also compare 1 vs 2 processes
# (tests/test_multiprocess.py); the noise (z, GP α, reparameterisation ε, t, dropout) is still all there.
FAMILIES = {
    # wgan-gp with the 'wgan' n-critic schedule (20 critic iterations per G step): 20 batches per step.
    "gan": ("train_gan.py", ["--ngf", "8", "--ndf", "8", "--latent-dim", "16", "--grid-samples", "4",
                             "--loss", "wgan-gp", "--n-critic-schedule", "wgan", "--g-norm", "group"]),
    # The PatchGAN switches on at step 4, after the kill point of the VAE test.
    "vae": ("train_vae.py", ["--base-channels", "8", "--max-channels", "32", "--latent-dim", "16", "--norm", "group",
                             "--lambda-adv", "0.1", "--disc-layers", "2", "--disc-ndf", "8", "--disc-norm", "none",
                             "--disc-start", "4", "--latent-plot", "none"]),
    # Dropout 0.1 (the default) stays on: its RNG stream must resume too.
    "ddpm": ("train_ddpm.py", ["--base-channels", "16", "--layers-per-block", "1", "--attn-res", "",
                               "--sample-steps", "2", "--grid-samples", "2", "--warmup-steps", "2"]),
}
HOOKS = ("FACEGEN_TEST_SAVE_PAUSE", "FACEGEN_INJECT_NAN_AT", "FACEGEN_INJECT_OOM_AT")


def base_env(cache_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in HOOKS}
    env.update(FACEGEN_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    return env


def family_cmd(family: str, out: Path, name: str, *extra: str, steps: int = STEPS) -> list[str]:
    script, args = FAMILIES[family]
    return [sys.executable, str(ROOT / script), *COMMON, *args, "--max-steps", str(steps), "--out", str(out),
            "--name", name, *extra]


class Proc:
    """A subprocess whose output goes to files (no pipe can fill up while a test polls)."""

    def __init__(self, cmd: list[str], env: dict, log_dir: Path, tag: str, new_session: bool = False,
                 cwd: Path = ROOT):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._out, stderr=self._err, text=True,
                                  start_new_session=new_session)

    def wait(self, timeout: float = 300) -> int:
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self._out.close()
        self._err.close()
        return self.p.returncode

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def ok(self, timeout: float = 300) -> "Proc":
        rc = self.wait(timeout)
        assert rc == 0, f"exit {rc}\nSTDOUT:\n{self.stdout[-3000:]}\nSTDERR:\n{self.stderr[-5000:]}"
        return self

    def until(self, condition, what: str, timeout: float = 240) -> None:
        """Poll ``condition()`` until true; fail if the process exits first (the kill would come too late)."""
        end = time.monotonic() + timeout
        while not condition():
            if self.p.poll() is not None:
                self.wait()
                pytest.fail(f"process exited ({self.p.returncode}) before {what}\n{self.stdout[-2000:]}\n"
                            f"{self.stderr[-3000:]}")
            if time.monotonic() > end:
                self.p.kill()
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.02)


def run_script(script: str, argv: list[str]) -> None:
    """``python SCRIPT ARGV...`` in this process, so that a test can monkeypatch the library code it runs: the script
    runs as ``__main__``, as from the command line; nothing imports it."""
    saved = sys.argv
    sys.argv = [str(ROOT / script), *argv]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = saved


def latest_step(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "latest").read_text().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return -1


def train_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if r["kind"] == "train"]


class References:
    """Uninterrupted runs of each family config (started on demand, shared by the tests of the session).

    They run in a sandbox: working directory ``sandbox/cwd``, HOME ``sandbox/home``, TMPDIR ``sandbox/tmp``, so that
    tests/test_safe_loading.py can check that nothing is written outside the run directory (and the data cache).
    """

    def __init__(self, root: Path, cache_dir: Path):
        self.root, self.procs = root, {}
        self.cwd, self.home, self.tmp = (root / "sandbox" / d for d in ("cwd", "home", "tmp"))
        for d in (self.cwd, self.home, self.tmp):
            d.mkdir(parents=True)
        self.env = base_env(cache_dir, HOME=str(self.home), TMPDIR=str(self.tmp))
        for var in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TORCH_HOME", "HF_HOME"):
            self.env.pop(var, None)   # library caches, if any, land in the sandbox HOME where they are seen

    def start(self, family: str) -> None:
        """Start all three on first use: they keep the second core busy while a test runs its serial phases."""
        for f in FAMILIES:
            if f not in self.procs:
                self.procs[f] = Proc(family_cmd(f, self.root, f), self.env, self.root / "logs", f, cwd=self.cwd)

    def get(self, family: str) -> Path:
        self.start(family)
        self.procs[family].ok()
        return self.root / family


def train_step(t) -> None:
    loss = t.net(t.batches.next()).pow(2).mean()
    t.opt.zero_grad()
    loss.backward()
    t.opt.step()
    t.ema.update(t.net)
