"""Shared test set-up: one-thread fixtures, preprocessing caches, the reference runs and a tiny in-process run.

Trainer launches in the suite run one CPU thread per process (utils/fastpath.cpu_threads_for_launch reads this):
the suite runs launches side by side on a 2-core machine, where more threads only oversubscribe it.
"""
import contextlib
import os
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from tests.runs import References

os.environ.setdefault("FACEGEN_THREADS", "1")


# ------------------------------------------------------------------------------------------------ threads

@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest on one intra-op thread: a second one only adds contention (~10x slower on a
    loaded 2-core machine).  A module applies it to every test with ``pytestmark = usefixtures("one_thread")``."""
    with _torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """``one_thread`` for a whole module, its module-scoped fixtures (e.g. shared runs) included."""
    with _torch_threads(1):
        yield


# ------------------------------------------------------------------------------------------------ caches

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A preprocessing cache ($FACEGEN_CACHE, --cache-dir) of the test module's own."""
    return tmp_path_factory.mktemp("facegen-cache")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One preprocessing cache for the runs of tests/runs.py (the synthetic set is built once per session); the
    reference runs use it, so tests/test_safe_loading.py can check what they wrote there."""
    path = tmp_path_factory.getbasetemp() / "facegen-cache-reliability"
    path.mkdir(exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------------ runs

@pytest.fixture(scope="session")
def references(tmp_path_factory, shared_cache) -> References:
    """The uninterrupted run of each family config (tests/runs.py), started on first use, one set per session."""
    return References(tmp_path_factory.mktemp("references"), shared_cache)


@pytest.fixture
def tiny_run(tmp_path):
    """A real single-process Accelerator with a prepared conv net, its optimizer, an EMA and Batches."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from utils.checkpoint import Checkpointer
    from utils.data import Batches
    from utils.ema import EMA
    from utils.run import Run

    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=True)
    args = Namespace(keep_checkpoints=3, resume=None)
    run = Run(args, "tiny", acc, tmp_path / "run")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    ema = EMA(net, 0.9)
    net, opt = acc.prepare(net, opt)
    batches = Batches(torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8), 4, seed=1)
    yield Namespace(run=run, net=net, opt=opt, ema=ema, batches=batches, ckpt=Checkpointer(run, {"ema": ema}, batches))
    AcceleratorState._reset_state(reset_partial_state=True)
