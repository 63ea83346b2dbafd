"""Resume state: everything needed to continue a run exactly, written atomically, rotated.

Layout of ``<run>/checkpoints/step-00001234/``:
  * Accelerate's ``save_state`` files: prepared models (safetensors), optimizers, LR schedulers,
    GradScaler, and every process's RNG states (python, numpy, torch, CUDA).
  * ``ema.safetensors``: the EMA networks (one prefix per EMA).
  * ``train_state.json``: step, epoch, train seconds, data position, family-specific schedule state.
    It is written last, so a directory without it is incomplete and never resumed from.
The directory is built under a temporary name and renamed; ``latest`` (a one-line text file) is
replaced atomically afterwards.  Nothing here unpickles: Accelerate loads its files with
``weights_only=True`` and our own state is safetensors + JSON.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from utils.export import atomic_write_bytes, atomic_write_json

STATE_FILE = "train_state.json"


class Checkpointer:
    def __init__(self, run, emas: dict | None = None, batches=None):
        self.run = run
        self.emas = emas or {}
        self.batches = batches
        self.dir = run.path("checkpoints")

    # ------------------------------------------------------------------ save
    def save(self, train_state: dict) -> Path:
        from safetensors.torch import save

        acc = self.run.accelerator
        step = int(train_state["step"])
        final = self.dir / f"step-{step:08d}"
        tmp = self.dir / f".step-{step:08d}.tmp"
        acc.wait_for_everyone()
        if self.run.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        if self.run.is_main:
            tensors = {f"{name}.{k}": v.detach().cpu().contiguous().clone()
                       for name, ema in self.emas.items() for k, v in ema.module.state_dict().items()}
            ema_meta = {name: str(ema.num_updates) for name, ema in self.emas.items()}
            atomic_write_bytes(tmp / "ema.safetensors", save(tensors, metadata=ema_meta))
            state = dict(train_state)
            if self.batches is not None:
                state["data"] = self.batches.state_dict()
            atomic_write_json(tmp / STATE_FILE, state)
            _fsync_dir(tmp)
            if final.exists():  # a re-save of the same step (e.g. final save after a periodic one)
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write_bytes(self.dir / "latest", (final.name + "\n").encode())
            self._rotate(keep=self.run.args.keep_checkpoints)
        acc.wait_for_everyone()
        return final

    def _rotate(self, keep: int) -> None:
        done = self.complete_checkpoints()
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def complete_checkpoints(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.glob("step-*") if (p / STATE_FILE).exists())

    # ---------------------------------------------------------------- resume
    def find(self, spec: str) -> Path | None:
        if spec != "latest":
            p = Path(spec)
            if not (p / STATE_FILE).exists():
                raise SystemExit(f"error: {p} is not a complete checkpoint directory (no {STATE_FILE})")
            return p
        pointer = self.dir / "latest"
        if pointer.exists():
            p = self.dir / pointer.read_text().strip()
            if (p / STATE_FILE).exists():
                return p
        done = self.complete_checkpoints()  # `latest` missing or stale: fall back to the newest complete one
        return done[-1] if done else None

    def resume(self) -> dict | None:
        """Load the checkpoint named by --resume into models/optimizers/EMA/data; return its train state."""
        from safetensors.torch import load_file

        spec = self.run.args.resume
        if not spec:
            return None
        path = self.find(spec)
        if path is None:
            self.run.print(f"no checkpoint in {self.dir}; starting a new run")
            return None
        try:
            state = json.loads((path / STATE_FILE).read_text())
            self.run.accelerator.load_state(str(path))
            tensors = load_file(str(path / "ema.safetensors"))
        except Exception as e:  # one line for the user, not a traceback
            raise SystemExit(f"error: cannot resume from {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        from safetensors import safe_open
        with safe_open(str(path / "ema.safetensors"), framework="pt") as f:
            counts = f.metadata() or {}
        for name, ema in self.emas.items():
            sd = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            ema.module.load_state_dict(sd)
            ema.num_updates = int(counts.get(name, 0))
        if self.batches is not None and "data" in state:
            self.batches.load_state_dict(state["data"])
        self.run.print(f"resumed from {path} at step {state['step']}")
        return state


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def graceful_stop_handler():
    """Install SIGTERM/SIGINT handlers that request a stop; the loop finishes its step, saves and exits 0."""
    import signal

    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:  # a second signal: the user really wants out now
            raise KeyboardInterrupt
        flag["stop"] = True
        print(f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, then exiting",
              flush=True)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
    return flag


def all_finite(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor (no host sync) that is True when every given tensor is finite."""
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()
