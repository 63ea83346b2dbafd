"""Step bookkeeping shared by the trainers: length, periodic actions, graceful stop, non-finite guard.

A trainer reads:

    loop = Loop(run, batches, ckpt)
    extra = loop.resume()                       # {} on a fresh run, the family's schedule state otherwise
    for x in loop:                              # yields local batches (float, [-1, 1], on device)
        ... one optimisation step ...
        if not loop.tick(ok):                   # ok: 0-d bool tensor, False → step was skipped
            continue
        if loop.due("log"): ...
        if loop.due("save"): loop.save(**schedule_state)
    loop.finish(**schedule_state)               # final checkpoint (if not just written) + message

``loop.step`` counts completed optimisation steps; periods ('500' or '25ep') come from the common flags.
"""
from __future__ import annotations

import time

import torch

from utils.checkpoint import graceful_stop_handler
from utils.run import is_due

PERIODS = ("log", "sample", "save", "export", "fid")


class NonFiniteError(SystemExit):
    pass


class Loop:
    def __init__(self, run, batches, ckpt):
        args = run.args
        self.run, self.batches, self.ckpt = run, batches, ckpt
        spe = batches.steps_per_epoch
        self.total_steps = args.max_steps or args.epochs * spe
        self.periods = {p: getattr(args, f"{p}_every").steps(spe) for p in PERIODS}
        self.step = 0
        self.train_seconds = 0.0
        self.bad_in_row = 0
        self.bad_total = 0
        self._stop = graceful_stop_handler()
        self._t = None
        self.stopped_early = False
        self.last_saved_step = -1

    # ------------------------------------------------------------------ state
    @property
    def epoch(self) -> int:
        return self.step // self.batches.steps_per_epoch

    def resume(self) -> dict:
        state = self.ckpt.resume()
        if not state:
            return {}
        self.step = int(state["step"])
        self.last_saved_step = self.step
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.bad_total = int(state.get("bad_total", 0))
        return dict(state.get("extra", {}))

    def state(self, **extra) -> dict:
        return {"step": self.step, "epoch": self.epoch, "train_seconds": self.train_seconds,
                "bad_total": self.bad_total, "extra": extra}

    # ------------------------------------------------------------------ iteration
    def __iter__(self):
        self._t = time.perf_counter()
        while self.step < self.total_steps:
            if self._stop_requested():
                self.stopped_early = True
                return
            yield self.batches.next()

    def _stop_requested(self) -> bool:
        acc = self.run.accelerator
        if acc.num_processes == 1:
            return self._stop["stop"]
        # Processes must agree, or one would wait forever in the next collective. Checking costs a tiny
        # all-reduce, so it is done on log steps only.
        if not is_due(self.step, self.periods["log"]):
            return False
        flag = torch.tensor([1.0 if self._stop["stop"] else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    def tick(self, ok: torch.Tensor | bool = True) -> bool:
        """Close a step. ``ok`` False means its loss/grads were non-finite and the update was skipped."""
        now = time.perf_counter()
        self.train_seconds += now - self._t
        self._t = now
        if not bool(ok):
            self.bad_in_row += 1
            self.bad_total += 1
            self.run.print(f"warning: non-finite loss or gradient at step {self.step}; update skipped "
                           f"({self.bad_in_row} in a row, {self.bad_total} total)")
            if self.bad_in_row >= self.run.args.max_bad_steps:
                raise NonFiniteError(
                    f"error: {self.bad_in_row} non-finite steps in a row at step {self.step}; stopping. The last good "
                    f"checkpoint is in {self.ckpt.dir} (lower the learning rate or try --mixed-precision bf16/no)")
            return False
        self.bad_in_row = 0
        self.step += 1
        return True

    def due(self, what: str) -> bool:
        """Periodic action due now; sample/save/export are also due at the very last step."""
        if is_due(self.step, self.periods[what]):
            return True
        return self.step == self.total_steps and what in ("sample", "save", "export")

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def save(self, **extra) -> None:
        """Write a resume checkpoint (all processes must call this)."""
        self.ckpt.save(self.state(**extra))
        self.last_saved_step = self.step

    def finish(self, **extra) -> None:
        """Final resume checkpoint unless this step already has one, and the exit message."""
        if self.last_saved_step != self.step:
            self.save(**extra)
        if self.stopped_early:
            self.run.print(f"stopped at step {self.step}; continue with the same command plus --resume latest")

    def images_per_second(self, batch_size: int) -> float:
        return self.step * batch_size / max(self.train_seconds, 1e-9)
