"""Progress bars (utils/progress.py): on a terminal the training loop, evaluate.py and compare.py draw a tqdm bar;
redirected (cluster logs, CI) they print exactly their plain lines.  $FACEGEN_PROGRESS forces either.  Also the
loop's clock behind the bar's img/s and the export's train time."""
from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from utils.argtypes import Every
from utils.loop import Loop
from utils.progress import PROGRESS_ENV, bars_enabled, track
from utils.run import Run
from utils.tracking import StatsLog


class FakeAccelerator:
    is_main_process, num_processes, device = True, 1, torch.device("cpu")

    def print(self, *a, **k):
        print(*a, **k)

    def log(self, values, step=None):
        pass


class FakeBatches:
    steps_per_epoch = 2

    def next(self):
        return torch.zeros(1)


class FakeCheckpointer:
    def resume(self):
        return {}

    def save(self, state):
        pass


def make_run(tmp_path) -> Run:
    periods = {f"{p}_every": Every("0") for p in ("sample", "save", "export", "fid")}
    args = argparse.Namespace(max_steps=4, epochs=1, log_every=Every("2"), max_bad_steps=3, batch_size=8, **periods)
    return Run(args, "gan", FakeAccelerator(), tmp_path)


def train(run: Run) -> Loop:
    loop = Loop(run, FakeBatches(), FakeCheckpointer(), modules=[])
    log = StatsLog(run)
    for _ in loop:
        loop.tick(True)
        if loop.due("log"):
            log.log(loop.step, {"d_loss": 0.25 * loop.step, "epoch": loop.epoch})
            run.print(f"step {loop.step}/{loop.total_steps} d_loss {0.25 * loop.step:.4g}")
    loop.finish()
    return loop


def test_detection_and_override(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert not bars_enabled(io.StringIO())            # redirected: no bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert bars_enabled(Tty())
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert not bars_enabled(Tty())
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert bars_enabled(io.StringIO())


def test_training_loop_without_terminal_prints_plain_lines_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    run = make_run(tmp_path)
    train(run)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["step 2/4 d_loss 0.5", "step 4/4 d_loss 1"]
    assert err == "" and run.progress is None


def test_training_loop_on_a_terminal_shows_a_bar_with_epoch_speed_and_losses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "1")
    run = make_run(tmp_path)
    loop = train(run)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["step 2/4 d_loss 0.5", "step 4/4 d_loss 1"]   # log lines intact, above the bar
    assert "[gan]" in err and "4/4" in err and "img/s" in err and "ep 2" in err and "d_loss 1" in err, err
    assert run.progress is None and loop.bar is None                           # closed with the loop


def test_track_passes_items_through_with_or_without_bar(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert list(track(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert list(track(range(3), desc="blocks")) == [0, 1, 2]
    assert "blocks" in capsys.readouterr().err


@pytest.mark.parametrize("forced", ["0", "1"])
def test_decoding_a_large_folder_draws_a_bar_only_where_bars_are_on(forced, tmp_path, monkeypatch, capsys):
    """A study's logs are files: FACEGEN_PROGRESS=0 must keep the 2000+ photo decode bar out of them."""
    from PIL import Image

    from utils.data_sources import folder_set

    monkeypatch.setenv(PROGRESS_ENV, forced)
    for i in range(2000):
        Image.new("RGB", (32, 32), (i % 256, 0, 0)).save(tmp_path / f"{i:04d}.png")
    raw = folder_set(str(tmp_path), 16, "center", None)
    assert raw.images.shape == (2000, 3, 16, 16), raw.skipped
    err = capsys.readouterr().err
    assert ("decode" in err and "2000/2000" in err) if forced == "1" else err == ""


@pytest.mark.parametrize("forced", ["0", "1"])
def test_feature_extraction_bar(forced, monkeypatch, capsys):
    from utils.feature_nets import TinyFeatures
    from utils.features import distributed_extract

    monkeypatch.setenv(PROGRESS_ENV, forced)
    images = torch.zeros(5, 3, 16, 16, dtype=torch.uint8)
    feats, _ = distributed_extract(images, TinyFeatures(), batch_size=2, desc="features")
    assert feats.shape == (5, 64)
    err = capsys.readouterr().err
    assert ("features" in err and "5/5" in err) if forced == "1" else err == ""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="job control signals are POSIX")
def test_time_stopped_by_job_control_is_not_training_time(tmp_path, monkeypatch):
    """A real stop: during step 3 this process SIGSTOPs itself for ~2 s and a helper sends SIGCONT.  The loop
    counts ~4 steps of 50 ms, not the stop."""
    monkeypatch.setenv(PROGRESS_ENV, "0")

    class SlowBatches(FakeBatches):
        calls = 0

        def next(self):
            self.calls += 1
            time.sleep(0.05)
            if self.calls == 3:
                subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(2); "
                                  f"os.kill({os.getpid()}, signal.SIGCONT)"])
                os.kill(os.getpid(), signal.SIGSTOP)
            return torch.zeros(1)

    run = make_run(tmp_path)
    loop = Loop(run, SlowBatches(), FakeCheckpointer(), modules=[])
    t0 = time.perf_counter()
    for _ in loop:
        loop.tick(True)
    wall = time.perf_counter() - t0
    assert loop.step == 4 and wall > 2.0, wall
    assert 0.2 <= loop.train_seconds < 0.2 + 0.5, (loop.train_seconds, wall)


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="job control signals are POSIX")
def test_a_stop_during_a_long_hook_keeps_the_hook_in_training_time(tmp_path, monkeypatch):
    """Between two steps the trainer runs hooks (sample grids, training-time FID, checkpoints) that take far longer
    than a step.  A stop in the middle of one must remove the stop only: 1 s of busy hook, stopped ~2 s halfway."""
    monkeypatch.setenv(PROGRESS_ENV, "0")
    run = make_run(tmp_path)
    loop = Loop(run, FakeBatches(), FakeCheckpointer(), modules=[])
    t0 = time.perf_counter()
    for _ in loop:
        busy(0.02)
        loop.tick(True)
        if loop.step == 2:
            busy(0.5)
            subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(2); "
                              f"os.kill({os.getpid()}, signal.SIGCONT)"])
            os.kill(os.getpid(), signal.SIGSTOP)
            busy(0.5)
    wall = time.perf_counter() - t0
    assert loop.step == 4 and wall > 2.5, wall
    assert 1.05 <= loop.train_seconds < 1.08 + 0.5, (loop.train_seconds, wall)
