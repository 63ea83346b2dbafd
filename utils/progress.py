"""Progress bars that appear only on a terminal.

Attached to a terminal (stderr is a TTY) the trainers, evaluate.py and compare.py show a tqdm bar; in cluster
logs and CI (stderr redirected) they print exactly the plain lines they always printed and no bar at all.
``$FACEGEN_PROGRESS`` overrides the detection: ``1`` forces bars on (e.g. under ``script`` or for tests), ``0``
forces them off.  Bars go to stderr; log lines printed while a bar is open go through ``tqdm.write`` to stdout,
so they stay whole lines above the bar.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable

PROGRESS_ENV = "FACEGEN_PROGRESS"


def bars_enabled(stream=None) -> bool:
    """Whether to draw bars: $FACEGEN_PROGRESS if set (1/0), else whether ``stream`` (stderr) is a terminal."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("1", "yes", "true", "on"):
        return True
    if forced in ("0", "no", "false", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def bar(total: int | None = None, *, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool | None = None,
        leave: bool = True):
    """A tqdm bar on stderr, or None when bars are off (callers then print their plain lines)."""
    if not (bars_enabled() if enabled is None else enabled):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, leave=leave, file=sys.stderr,
                smoothing=0.1)


def track(iterable: Iterable, *, total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool | None = None, leave: bool = False, size: Callable[[Any], int] | None = None) -> Iterable:
    """``iterable`` wrapped in a bar when bars are on, else unchanged.

    ``size(item)``: how many units an item counts for once consumed (e.g. the images in a block); default 1.
    """
    b = bar(total if total is not None else _len(iterable), desc=desc, unit=unit, enabled=enabled, leave=leave)
    if b is None:
        yield from iterable
        return
    try:
        for item in iterable:
            yield item
            b.update(1 if size is None else size(item))
    finally:
        finish(b)


def finish(bar_) -> None:
    """Draw the final count, then close: tqdm redraws at most every 0.1 s, so a fast last update would otherwise
    be cleared (leave=False) or left stale without ever being shown."""
    bar_.refresh()
    bar_.close()


def _len(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def write(bar_, text: str) -> None:
    """Print a log line: above the bar when one is open, else a plain print (stdout)."""
    if bar_ is None:
        print(text, flush=True)
    else:
        bar_.write(text, file=sys.stdout)


class TrainingBar:
    """The trainers' bar (one per run, main process): steps done / total, epoch, img/s and the last logged losses.

    ``utils.loop.Loop`` opens and advances it; ``utils.tracking.StatsLog`` hands it each logged record;
    ``Run.print`` writes through it while it is open.  Cheap per step: tqdm redraws at most ~10 times a second.
    """

    LOSS_KEYS = ("loss", "d_loss", "g_loss", "recon", "kl", "w_dist", "gp", "cycle", "adv", "mse")

    def __init__(self, total: int, initial: int, batch_size: int, desc: str):
        self.batch_size = batch_size
        self.bar = bar(total, desc=desc, unit="step", initial=initial, enabled=True)
        self.losses: dict[str, float] = {}
        self.epoch, self.images_per_second = None, None

    def _postfix(self) -> None:
        parts = [] if self.epoch is None else [f"ep {self.epoch}", f"{self.images_per_second:.1f} img/s"]
        parts += [f"{k} {v:.4g}" for k, v in self.losses.items()]
        self.bar.set_postfix_str(" ".join(parts), refresh=False)   # drawn with the next update (≤ 10/s)

    def step(self, epoch: int, images_per_second: float) -> None:
        self.epoch, self.images_per_second = epoch, images_per_second
        self._postfix()
        self.bar.update(1)

    def record(self, values: dict) -> None:
        """Keep the loss-like scalars of a logged record (keys naming a loss, or the usual loss terms)."""
        shown = {}
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if "loss" in k or k in self.LOSS_KEYS:
                shown[k] = float(v)
        if shown:
            self.losses = dict(list(shown.items())[:4])
            self._postfix()

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()
