"""Resume state: everything needed to continue a run exactly, written atomically, rotated.

Layout of ``<run>/checkpoints/step-00001234/``:
  * Accelerate's ``save_state`` files: prepared models (safetensors), optimizers, LR schedulers,
    GradScaler, and every process's RNG states (python, numpy, torch, CUDA).
  * ``ema.safetensors``: the EMA networks (one prefix per EMA).
  * ``train_state.json``: step, epoch, train seconds, data position, family-specific schedule state.
    It is written last, so a directory without it is incomplete and never resumed from.
The directory is built under a temporary name (``.step-….tmp``) and renamed; ``latest`` (a one-line text
file) is replaced atomically afterwards.  A kill at any moment therefore leaves either the previous
checkpoint or the new one as ``latest``, never a partial one; leftover temporary directories are ignored
and removed by the next save.  Old checkpoints are renamed away before they are deleted, so a kill
during rotation cannot leave a half-deleted directory that still looks complete.

Nothing here unpickles untrusted code: Accelerate loads its files with ``weights_only=True`` (plus an
allow-list of numpy types for the RNG states) and our own state is safetensors + JSON.  Accelerate
swallows a failure to restore the RNG states; ``Checkpointer.resume`` checks that they were restored.

Test hook (used by tests/test_resume.py, harmless otherwise): ``FACEGEN_TEST_SAVE_PAUSE=<seconds>``
sleeps inside every save after the model/optimizer/EMA files are in the temporary directory and before
``train_state.json`` is written, so a test can kill the process in the middle of a save.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from utils.export import DISK_FULL, DiskFullError, atomic_write_bytes, atomic_write_json

STATE_FILE = "train_state.json"
REPEAT_WINDOW_S = 2.0  # see graceful_stop_handler
_STEP_DIR = re.compile(r"^step-\d{8}$")


class Checkpointer:
    def __init__(self, run, emas: dict | None = None, batches=None):
        self.run = run
        self.emas = emas or {}
        self.batches = batches
        self.dir = run.path("checkpoints")

    # ------------------------------------------------------------------ save
    def save(self, train_state: dict) -> Path:
        """Write a resume checkpoint for ``train_state['step']`` (collective: every process calls it).

        A full disk ends the run with one line (DiskFullError); the partial directory is removed and ``latest``
        still names the previous complete checkpoint.
        """
        step = int(train_state["step"])
        tmp = self.dir / f".step-{step:08d}.tmp"
        try:
            return self._save(train_state, step, tmp)
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise DiskFullError(tmp, e) from None
        except DiskFullError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _save(self, train_state: dict, step: int, tmp: Path) -> Path:
        from safetensors.torch import save

        acc = self.run.accelerator
        final = self.dir / f"step-{step:08d}"
        acc.wait_for_everyone()
        if self.run.is_main:
            self._remove_leftovers()
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        # Every process writes its own RNG file; the directory must not be renamed under a slower one.
        acc.wait_for_everyone()
        if self.run.is_main:
            tensors = {f"{name}.{k}": v.detach().cpu().contiguous().clone()
                       for name, ema in self.emas.items() for k, v in ema.module.state_dict().items()}
            ema_meta = {name: str(ema.num_updates) for name, ema in self.emas.items()}
            atomic_write_bytes(tmp / "ema.safetensors", save(tensors, metadata=ema_meta))
            _test_pause()
            state = dict(train_state, num_processes=acc.num_processes)
            if self.batches is not None:
                state["data"] = self.batches.state_dict()
            atomic_write_json(tmp / STATE_FILE, state)
            _fsync_tree(tmp)
            if final.exists():  # a re-save of the same step (e.g. the stop save after a periodic one)
                _discard(final)
            os.replace(tmp, final)
            atomic_write_bytes(self.dir / "latest", (final.name + "\n").encode())
            _fsync_dir(self.dir)
            self._rotate(keep=self.run.args.keep_checkpoints)
        acc.wait_for_everyone()
        return final

    def _rotate(self, keep: int) -> None:
        done = self.complete_checkpoints()
        for old in done[:-keep]:
            _discard(old)

    def _remove_leftovers(self) -> None:
        """Temporary and half-deleted directories left by a killed save or rotation."""
        if self.dir.exists():
            for p in self.dir.glob(".step-*"):
                shutil.rmtree(p, ignore_errors=True)

    def complete_checkpoints(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file())

    # ---------------------------------------------------------------- resume
    def find(self, spec: str) -> Path | None:
        """The checkpoint directory named by ``--resume`` ('latest' or a path); None if 'latest' has none."""
        if spec != "latest":
            p = Path(spec)
            if not (p / STATE_FILE).is_file():
                raise SystemExit(f"error: {p} is not a complete checkpoint directory (no {STATE_FILE})")
            return p
        pointer = self.dir / "latest"
        try:
            name = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        # The pointer is only ever a sibling's name; anything else (damaged file, a path) is ignored.
        if _STEP_DIR.match(name) and (self.dir / name / STATE_FILE).is_file():
            return self.dir / name
        done = self.complete_checkpoints()  # `latest` missing, damaged or stale: the newest complete one
        return done[-1] if done else None

    def resume(self) -> dict | None:
        """Load the checkpoint named by --resume into models/optimizers/EMA/data; return its train state."""
        spec = self.run.args.resume
        if not spec:
            return None
        path = self.find(spec)
        if path is None:
            self.run.print(f"no checkpoint in {self.dir}; starting a new run")
            _commit_config(self.run)
            return None
        try:
            state = _read_state(path)
            self.run.accelerator.load_state(str(path))
            self._load_emas(path)
        except Exception as e:  # one line for the user, not a traceback
            raise SystemExit(f"error: cannot resume from {path}: {type(e).__name__}: "
                             f"{(str(e).strip().splitlines() or [''])[0][:200]}") from None
        self._check_random_states(path, state)
        if self.batches is not None and "data" in state:
            self.batches.load_state_dict(state["data"])
        _commit_config(self.run)
        self.run.print(f"resumed from {path} at step {state['step']}")
        return state

    def _load_emas(self, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        tensors = load_file(str(path / "ema.safetensors"))
        with safe_open(str(path / "ema.safetensors"), framework="pt") as f:
            counts = f.metadata() or {}
        for name, ema in self.emas.items():
            sd = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            ema.module.load_state_dict(sd)
            ema.num_updates = int(counts.get(name, 0))

    def _check_random_states(self, path: Path, state: dict) -> None:
        """Accelerate logs (at INFO level) and ignores a failure to restore RNG states; we do not."""
        from accelerate.utils.other import load

        acc = self.run.accelerator
        rng_file = path / f"random_states_{acc.process_index}.pkl"
        saved_by = int(state.get("num_processes", acc.num_processes))
        if not rng_file.is_file():
            print(f"warning: {path} was written by {saved_by} process(es) and has no random state for process "
                  f"{acc.process_index}; its noise stream restarts from the seed (the run continues, not bitwise "
                  f"as an uninterrupted {saved_by}-process run)", flush=True)
            return
        try:
            saved = load(str(rng_file))["torch_manual_seed"]
        except Exception as e:
            raise SystemExit(f"error: cannot read random states {rng_file}: {type(e).__name__}") from None
        if not torch.equal(saved, torch.get_rng_state()):
            raise SystemExit(f"error: the random states in {rng_file} were not restored; refusing to continue a run "
                             f"that would silently differ")


def _commit_config(run) -> None:
    if hasattr(run, "commit_config"):  # utils.run.Run; tests may pass a bare stand-in
        run.commit_config()


def _read_state(path: Path) -> dict:
    state = json.loads((path / STATE_FILE).read_text())
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise ValueError(f"{STATE_FILE} has no valid step")
    return state


def _discard(path: Path) -> None:
    """Rename first (atomic), then delete: a kill mid-delete leaves a '.step-*' leftover, not a broken checkpoint."""
    trash = path.with_name(f".{path.name}.del")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for p in path.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a power cut after the rename must not undo it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def _test_pause() -> None:
    seconds = os.environ.get("FACEGEN_TEST_SAVE_PAUSE")
    if seconds:
        time.sleep(float(seconds))


def graceful_stop_handler():
    """Install SIGTERM/SIGINT handlers that request a stop; the loop finishes its step, saves and exits 0.

    A signal arriving within ``REPEAT_WINDOW_S`` of the first is the same request delivered twice (Ctrl-C or
    SLURM reach the launcher and every worker, and torchrun then forwards its own SIGTERM to the workers), so
    it is ignored.  A later second signal exits at once (status 1) with one line; the last complete checkpoint
    stays valid because every checkpoint is written atomically.
    """
    import signal

    flag = {"stop": False, "at": 0.0}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        now = time.monotonic()
        if flag["stop"]:
            if now - flag["at"] < REPEAT_WINDOW_S:
                return
            raise SystemExit(f"error: second {name}: stopped without saving; the last complete checkpoint is "
                             f"intact (continue with --resume latest)")
        flag.update(stop=True, at=now)
        print(f"\nreceived {name}: finishing this step, saving a checkpoint, then exiting", flush=True)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
    return flag


def all_finite(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor (no host sync) that is True when every given tensor is finite.

    One min/max pass per tensor: a tensor is finite iff its min and max are (NaN propagates into both).  That is
    ~10x cheaper than ``isfinite(t).all()`` (four passes), which cost ~7% of a GAN step on a CPU."""
    parts = [torch.stack(torch.aminmax(t.detach())).float() for t in tensors if t.numel()]
    if not parts:
        return torch.tensor(True)
    return torch.isfinite(torch.cat(parts)).all()


def step_if_finite(accelerator, optimizer, module: torch.nn.Module, grad_norm: torch.Tensor | None = None) -> bool:
    """``optimizer.step()`` unless ``module``'s gradients are non-finite; returns whether the update happened.

    Call it after ``accelerator.backward``: gradients are all-reduced by then, so every process decides the same.
    With fp16 the GradScaler decides (it skips its step and lowers the scale on overflow).  ``grad_norm``, when the
    caller already clipped, is a cheaper witness: the total norm is non-finite iff some gradient is.  One host sync.
    """
    if getattr(accelerator, "scaler", None) is not None:
        optimizer.step()
        return not getattr(optimizer, "step_was_skipped", False)
    if grad_norm is not None:
        finite = all_finite(grad_norm)
    else:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        finite = all_finite(*grads) if grads else torch.tensor(True)
    if not bool(finite):
        return False
    optimizer.step()
    return True
