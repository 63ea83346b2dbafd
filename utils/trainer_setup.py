"""The one setup sequence of every trainer: how its run starts, how its models are prepared, and how its loop and
stats log open.

    run, data, fid = start_run(args, "vae", run_tag(args))
    ema, (G, D, opt_g, opt_d) = prepare_models(acc, args, G, [G, D, opt_g, opt_d])
    loop, log, extra = open_loop(run, batches, {"ema": ema})

``prepare_models`` fixes the order EMA copy → channels_last → in-place compile → ``accelerator.prepare``:
  * the EMA copy comes first, so the averaged (sampled, exported) network is a plain NCHW, uncompiled module;
  * compilation is ``module.compile()``, in place, never ``torch.compile(module)``: a wrapper would prefix every
    state-dict key with ``_orig_mod.``, and a checkpoint written with --compile would not load without it;
  * ``prepare`` comes last, so DDP wraps (and Accelerate moves) the module that is already laid out and compiled.

``open_loop`` resumes the Loop as --resume asks and opens stats.jsonl under one rule: the log keeps the records of
the steps the resumed state has done (step ≤ the checkpoint's step), so re-run steps are logged once and none is
lost; a fresh run starts an empty log.  The last training-time FID comes back as ``loop.last_fid``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from utils import fastpath
from utils.checkpoint import Checkpointer
from utils.data import face_data_from_args
from utils.ema import EMA
from utils.fid_hook import TrainingFID
from utils.loop import Loop
from utils.run import setup_run
from utils.tracking import StatsLog


def start_run(args, family: str, tag: str):
    """The run (directory, accelerator, logging), the training and held-out data with its summary printed, and the
    training-time FID hook on that held-out split: every single-domain trainer begins with these."""
    run = setup_run(args, family, tag)
    data = face_data_from_args(args)
    run.print(data.summary())
    return run, data, TrainingFID(run, data)


def prepare_models(acc, args, ema_of: nn.Module, objects: Sequence, *, standing: Callable | None = None,
                   compiled: Sequence[nn.Module] | None = None, layout: Sequence[nn.Module | None] = ()):
    """(EMA of ``ema_of``, ``objects`` prepared, in their order) after the setup sequence above.

    ``objects``: the models and optimizers ``accelerator.prepare`` receives (a None stays None, e.g. an absent
    discriminator).  channels_last (--channels-last) applies to its modules and to ``layout`` (frozen nets that are
    not prepared, e.g. a perceptual loss); --compile to ``compiled`` (default: its modules; pass fewer where a
    module cannot be compiled, or a submodule where only that one runs the training forward).  ``standing``: the
    EMA's BatchNorm re-estimation pass (utils/ema.py)."""
    ema = EMA(ema_of, args.ema_decay, standing=standing).to(acc.device)
    modules = [o for o in objects if isinstance(o, nn.Module)]
    if getattr(args, "channels_last", False):
        for m in [*modules, *layout]:
            if m is not None:
                fastpath.channels_last_(m)
    for m in modules if compiled is None else compiled:
        fastpath.compile_(m, args.compile)
    present = [o for o in objects if o is not None]
    prepared = acc.prepare(*present)
    prepared = iter(prepared if len(present) > 1 else (prepared,))  # prepare returns a lone object unwrapped
    return ema, [None if o is None else next(prepared) for o in objects]


def open_loop(run, batches, slots: dict, modules=None) -> tuple[Loop, StatsLog, dict]:
    """(Loop resumed as --resume asks, its stats log, the family's schedule state: {} on a fresh run).

    ``slots``: the Checkpointer's EMA-like slots ({"ema": ema}, plus e.g. image pools); ``modules``: see Loop."""
    loop = Loop(run, batches, Checkpointer(run, slots, batches), modules)
    extra = loop.resume()
    log = StatsLog(run)
    kept = log.truncate_after(loop.step if loop.resumed else -1)
    if loop.resumed and loop.last_fid is None:
        # Checkpoints written before the Loop kept the FID: the log's last one up to the resumed step.
        fids = [r["fid"] for r in kept if r.get("kind") == "fid" and "fid" in r]
        loop.last_fid = fids[-1] if fids else None
    return loop, log, extra
