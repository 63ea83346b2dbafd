"""Step bookkeeping shared by the trainers: length, periodic actions, graceful stop, non-finite guard.

A trainer reads (``open_loop``, utils/trainer_setup.py, builds the Loop, resumes it and opens the stats log):

    loop, log, extra = open_loop(run, batches, {"ema": ema})   # extra: {} on a fresh run, else the family's state
    for x in loop:                              # yields local batches (float, [-1, 1], on device)
        ... one optimisation step ...
        if not loop.tick(ok):                   # ok: 0-d bool tensor, False → step was skipped
            continue
        if loop.due("fid"): loop.last_fid = fid(...)   # saved with every checkpoint
        if loop.due("log"): ...
        if loop.due("save"): loop.save(**schedule_state)
    loop.finish(**schedule_state)               # final checkpoint (if not just written) + message

``loop.step`` counts completed optimisation steps; periods ('500' or '25ep') come from the common flags.

Reliability:
  * SIGTERM/SIGINT: the current step finishes, a checkpoint is saved and the run exits 0 with a message
    naming ``--resume latest`` (under several processes they agree through a tiny all-reduce every
    ``STOP_CHECK_PERIOD`` steps, so nobody waits forever in a collective).
  * Training time (``train_seconds``: the export's train time, the logged img/s) leaves out time the process
    spent stopped by job control (Ctrl-Z then ``fg``, ``kill -STOP``/``-CONT``): a laptop run paused for an
    hour does not report an hour of training.
  * A step whose ``ok`` is False was skipped by the trainer (no optimizer update).  Module buffers
    (BatchNorm statistics) that its forward passes changed are restored, so a NaN batch cannot poison the
    running statistics that the EMA copies and the export uses.  ``--max-bad-steps`` such steps in a row
    save the last good state and stop with a one-line error.
"""
from __future__ import annotations

import threading
import time

import torch

from utils.checkpoint import graceful_stop_handler
from utils.run import is_due

PERIODS = ("log", "sample", "save", "export", "fid")
# Under several processes a stop request is agreed on every this many steps (one 4-byte all-reduce and a host
# sync); with SLURM's usual 30-90 s between SIGTERM and SIGKILL, that is well within the grace period.
STOP_CHECK_PERIOD = 10


class StoppedClock:
    """Seconds this process has spent stopped (``kill -STOP``/Ctrl-Z until SIGCONT) since ``start()``.

    A stop cannot be caught and a SIGCONT handler only says when it ended, so a daemon thread wakes every PERIOD
    seconds instead: a wake-up gap longer than GAP during which the whole process used less than half the gap in
    CPU time is a stop.  A busy main thread that delays the wake-up (the GIL) keeps using CPU, so it is not
    mistaken for one; a stop shorter than GAP is counted as training (error below GAP per stop).  A process the
    scheduler starves almost completely for over GAP (e.g. at nice 19 beside busy ones) reads as stopped too: it
    was not training then either."""

    PERIOD, GAP = 0.1, 0.5

    def __init__(self):
        self.total = 0.0
        self._halt = threading.Event()
        self._thread = None

    def start(self) -> None:
        if self._thread is None:
            self._halt.clear()
            self._thread = threading.Thread(target=self._watch, name="facegen-stopped-clock", daemon=True)
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        while not self._halt.wait(self.PERIOD):
            now, now_cpu = time.perf_counter(), time.process_time()
            gap = now - wall - self.PERIOD
            if gap > self.GAP and now_cpu - cpu < 0.5 * gap:
                self.total += gap   # a float add under the GIL: tick() reads a consistent value
            wall, cpu = now, now_cpu


class NonFiniteError(SystemExit):
    pass


class Loop:
    def __init__(self, run, batches, ckpt, modules=None):
        """``modules``: whose buffers are restored after a skipped step (default: every prepared model)."""
        args = run.args
        self.run, self.batches, self.ckpt = run, batches, ckpt
        spe = batches.steps_per_epoch
        self.total_steps = args.max_steps or args.epochs * spe
        self.periods = {p: getattr(args, f"{p}_every").steps(spe) for p in PERIODS}
        self.step = 0
        self.train_seconds = 0.0
        self.bad_in_row = 0
        self.bad_total = 0
        self.last_fid = None   # the latest training-time FID: in every checkpoint, so a resumed run's exports keep it
        self.resumed = False
        self._stop = graceful_stop_handler()
        self._t = None
        self._stopped = StoppedClock()
        self._stopped_at_t = 0.0
        self.stopped_early = False
        self.last_saved_step = -1
        self._modules = modules
        self._buffers, self._snapshot = [], []
        self._extra = {}
        self._rate_mark = None   # (step, train_seconds) at the last recent_images_per_second()
        self.bar = None  # utils.progress.TrainingBar on a terminal (main process), else None: plain log lines only

    # ------------------------------------------------------------------ state
    @property
    def epoch(self) -> int:
        return self.step // self.batches.steps_per_epoch

    def resume(self) -> dict:
        state = self.ckpt.resume()
        if not state:
            return {}
        self.resumed = True
        self.step = int(state["step"])
        self.last_saved_step = self.step
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self._rate_mark = (self.step, self.train_seconds)
        self.bad_total = int(state.get("bad_total", 0))
        self._extra = dict(state.get("extra", {}))
        # Older checkpoints kept it among the DDPM trainer's schedule state.
        self.last_fid = state.get("last_fid", self._extra.pop("last_fid", None))
        return dict(self._extra)

    def state(self, **extra) -> dict:
        return {"step": self.step, "epoch": self.epoch, "train_seconds": self.train_seconds,
                "bad_total": self.bad_total, "last_fid": self.last_fid, "extra": extra}

    # ------------------------------------------------------------------ iteration
    def __iter__(self):
        self._stopped.start()
        self._t, self._stopped_at_t = time.perf_counter(), self._stopped.total
        self._open_bar()
        try:
            while self.step < self.total_steps:
                if self._stop_requested():
                    self.stopped_early = True
                    return
                self._snapshot_buffers()
                yield self.batches.next()
        finally:
            self._stopped.close()
            self._close_bar()

    def _open_bar(self) -> None:
        from utils.progress import TrainingBar, bars_enabled

        if self.bar is None and self.run.is_main and bars_enabled():
            self.bar = TrainingBar(self.total_steps, self.step, self.run.args.batch_size, f"[{self.run.family}]")
            self.run.progress = self.bar   # run.print and StatsLog go through it while it is open

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.run.progress = None

    def _stop_requested(self) -> bool:
        acc = self.run.accelerator
        if acc.num_processes == 1:
            return self._stop["stop"]
        # Processes must agree, or one would wait forever in the next collective. Checking costs a tiny
        # all-reduce and a host sync, so it is done every STOP_CHECK_PERIOD steps only.
        if not is_due(self.step, STOP_CHECK_PERIOD):
            return False
        flag = torch.tensor([1.0 if self._stop["stop"] else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    def tick(self, ok: torch.Tensor | bool = True) -> bool:
        """Close a step. ``ok`` False means its loss/grads were non-finite and the update was skipped."""
        now, stopped = time.perf_counter(), self._stopped.total
        seconds = max(0.0, (now - self._t) - (stopped - self._stopped_at_t))
        self.train_seconds += seconds
        self._t, self._stopped_at_t = now, stopped
        if not bool(ok):
            self._restore_buffers()
            self.bad_in_row += 1
            self.bad_total += 1
            self.run.print(f"warning: non-finite loss or gradient at step {self.step}; update skipped "
                           f"({self.bad_in_row} in a row, {self.bad_total} total)")
            if self.bad_in_row >= self.run.args.max_bad_steps:
                self._stop_non_finite()
            return False
        self.bad_in_row = 0
        self.step += 1
        if self.bar is not None:
            self.bar.step(self.epoch, self.images_per_second(self.run.args.batch_size))
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
        self._extra = dict(extra)

    def _stop_non_finite(self) -> None:
        """Save the last good state (skipped steps changed nothing) and stop with one line (exit status 1)."""
        if self.step > 0 and self.step != self.last_saved_step:
            self.save(**self._extra)
        done = self.ckpt.complete_checkpoints() if self.run.is_main else []
        where = (f"the last good state is checkpoint {done[-1]} (continue with --resume latest after lowering the "
                 f"learning rate, or try --mixed-precision bf16/no)") if done else "no step completed, nothing saved"
        msg = f"error: {self.bad_in_row} non-finite steps in a row at step {self.step}; stopping; {where}"
        raise NonFiniteError(msg if self.run.is_main else 1)  # one message, from the main process

    # ------------------------------------------------------------------ buffers of skipped steps
    def _snapshot_buffers(self) -> None:
        if self._modules is None:
            # Accelerate keeps the prepared models in `_models` (stable since 0.x); EMA copies are not there.
            self._modules = list(getattr(self.run.accelerator, "_models", []))
        self._buffers = [b for m in self._modules for b in m.buffers()]
        with torch.no_grad():
            if len(self._snapshot) != len(self._buffers) or any(
                    s.shape != b.shape or s.dtype != b.dtype or s.device != b.device
                    for s, b in zip(self._snapshot, self._buffers)):
                self._snapshot = [b.detach().clone() for b in self._buffers]
            else:
                for s, b in zip(self._snapshot, self._buffers):
                    s.copy_(b)

    def _restore_buffers(self) -> None:
        with torch.no_grad():
            for s, b in zip(self._snapshot, self._buffers):
                b.copy_(s)

    def finish(self, **extra) -> None:
        """Final resume checkpoint unless this step already has one, and the exit message."""
        if self.last_saved_step != self.step:
            self.save(**extra)
        if self.stopped_early:
            self.run.print(f"stopped at step {self.step}; continue with the same command plus --resume latest")

    def images_per_second(self, batch_size: int) -> float:
        """Throughput averaged over the whole run (all resumes)."""
        return self.step * batch_size / max(self.train_seconds, 1e-9)

    def recent_images_per_second(self, batch_size: int) -> float:
        """Throughput since the previous call (the logging period; since the resume for the first), so a log line
        shows the current speed, not an average that start-up or a busy machine earlier in the run weighs down."""
        last_step, last_seconds = self._rate_mark or (0, 0.0)
        self._rate_mark = (self.step, self.train_seconds)
        return (self.step - last_step) * batch_size / max(self.train_seconds - last_seconds, 1e-9)
