"""What every trainer shares: common flags, Accelerate setup, run directory, periodic schedules.

Each ``train_*.py`` owns its flags and its loop, and imports its step from its family's library module
(utils/gan_training.py, vae_training.py, ddpm_training.py, cyclegan_training.py); this module owns the rest so
the scripts read the same way (DiT-style: setup → build → loop → save).  Flag types are in utils/argtypes.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.argtypes import Every, positive_int, seed_int, unit_float
from utils.data import Batches, add_data_args
from utils.fastpath import add_fastpath_args
from utils.table_specs import PLAN_ROWS

# Flags that change neither the model nor the data nor the optimisation; excluded from the run-name hash
# so that `--resume latest` with a longer schedule or other logging finds the same run directory.
RUNTIME_FLAGS = {"out", "name", "resume", "dry_run", "epochs", "max_steps", "save_every", "sample_every", "log_every",
                 "fid_every", "export_every", "keep_checkpoints", "fid_samples", "fid_extractor", "fid_weights",
                 "dinov2_weights", "row",
                 "cache_dir", "download", "data_root", "compile", "tf32", "data_on_device", "max_bad_steps",
                 "channels_last", "optimizer_impl"}  # speed options: same maths up to float rounding (utils/fastpath.py)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every trainer has, spelled the same everywhere; trainers change defaults with set_defaults."""
    add_data_args(parser)
    g = parser.add_argument_group("run")
    g.add_argument("--out", type=str, default="runs", help="parent folder of run directories")
    g.add_argument("--name", type=str, default=None,
                   help="run directory name (default: derived from the config, so --resume latest finds it)")
    # Stored in config.json: compare.py places the run in this row's table whatever the run is named.
    g.add_argument("--row", type=str, default=None, choices=PLAN_ROWS, metavar="ROW",
                   help="the results-table row this run is (docs/plan.md, e.g. 2.3, 1A-64px, 5-gan, s004-lsgan; the "
                        "row scripts pass it)")
    g.add_argument("--resolution", type=int, default=64, choices=[16, 32, 64, 128],
                   help="image size (plan 1A: 64 or 128; 16/32 for smoke tests)")
    g.add_argument("--batch-size", type=positive_int, default=64,
                   help="GLOBAL batch size, split over processes (plan: 64 everywhere)")
    g.add_argument("--epochs", type=positive_int, default=100, help="training length in epochs")
    g.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps (overrides --epochs)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed for weights, noise and data order")
    g.add_argument("--resume", type=str, default=None,
                   help="'latest' (newest checkpoint of this run directory) or a checkpoint directory")
    g.add_argument("--mixed-precision", type=str, default="no", choices=["no", "fp16", "bf16"],
                   help="autocast dtype; changes numerics (bf16 losses ~1e-2 relative to fp32 per step; losses, KL, "
                        "gradient penalty stay fp32); fp16 uses a GradScaler (Accelerate) that skips overflowing steps. "
                        "bf16 is fast on Ampere+ GPUs and on CPUs with AMX/AVX512-BF16 (with --channels-last)")
    g.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="allow TF32 matmuls/convs on Ampere+ GPUs")
    g.add_argument("--ema-decay", type=unit_float, default=0.9999, help="EMA decay (plan: 0.9999; samples use EMA)")
    g.add_argument("--save-every", type=Every, default=Every("1ep"),
                   help="resume-checkpoint period, steps or e.g. '1ep'")
    g.add_argument("--keep-checkpoints", type=positive_int, default=3, help="resume checkpoints to keep")
    g.add_argument("--export-every", type=Every, default=Every("10ep"),
                   help="period of kept .safetensors snapshots (progression strips); the final export is always written")
    g.add_argument("--sample-every", type=Every, default=Every("1ep"), help="sample-grid period, steps or epochs")
    g.add_argument("--log-every", type=Every, default=Every("50"), help="logging period (host syncs only here)")
    g.add_argument("--fid-every", type=Every, default=Every("25ep"), help="FID period (plan: 25 epochs); 0 = off")
    g.add_argument("--fid-samples", type=positive_int, default=5000, help="generated images per FID evaluation")
    g.add_argument("--fid-extractor", type=str, default="inception", choices=["inception", "tiny", "dinov2"],
                   help="feature extractor for training-time FID ('tiny' is a fixed random net for CPU smoke runs; "
                        "'dinov2' logs FD-DINOv2 instead, weights from --dinov2-weights)")
    g.add_argument("--fid-weights", type=str, default=None,
                   help="local clean-fid Inception file (default $FACEGEN_FID_WEIGHTS or clean-fid's download)")
    g.add_argument("--dinov2-weights", type=str, default=None,
                   help="DINOv2 ViT-L/14 file for --fid-extractor dinov2 (default $FACEGEN_DINOV2_WEIGHTS, else the "
                        "Hugging Face hub; 'tiny' = random tiny ViT, tests only)")
    g.add_argument("--data-on-device", type=str, default="auto", choices=["auto", "yes", "no"],
                   help="keep the uint8 training set in accelerator memory (auto: when it fits in 25%% of it)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training modules (same maths up to float reassociation; the first steps "
                        "pay the compilation)")
    add_fastpath_args(g)
    g.add_argument("--max-bad-steps", type=positive_int, default=20,
                   help="stop after this many consecutive non-finite steps")
    g.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def fid_weights_of(args: argparse.Namespace) -> str | None:
    """The weight file of --fid-extractor: --dinov2-weights for 'dinov2', else --fid-weights."""
    if args.fid_extractor == "dinov2":
        return getattr(args, "dinov2_weights", None)
    return args.fid_weights


def config_of(args: argparse.Namespace) -> dict:
    return {k: (v.text if isinstance(v, Every) else v) for k, v in sorted(vars(args).items())}


def run_name(family: str, args: argparse.Namespace, tag: str) -> str:
    cfg = {k: v for k, v in config_of(args).items() if k not in RUNTIME_FLAGS}
    digest = hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:6]
    data = "synthetic" if args.data == "synthetic" else Path(args.data).name or "data"
    return f"{family}-{tag}-{data}-{args.resolution}px-{digest}"


@dataclass
class Run:
    args: argparse.Namespace
    family: str
    accelerator: object
    dir: Path
    start_time: float = field(default_factory=time.time)
    pending_config: dict | None = None  # config.json content not yet written (see commit_config)
    progress: object = None  # the open utils.progress.TrainingBar (terminal only); print() writes above it

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def print(self, *a, **k) -> None:
        if self.progress is not None and self.is_main and not k:
            self.progress.write(" ".join(str(x) for x in a))   # a whole line above the progress bar
        else:
            self.accelerator.print(*a, **k)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def commit_config(self) -> None:
        """Write config.json (resolved flags + command) once; a failed resume leaves the old one untouched."""
        from utils.export import atomic_write_json

        if self.pending_config is not None and self.is_main:
            atomic_write_json(self.dir / "config.json", self.pending_config)
        self.pending_config = None


def setup_run(args: argparse.Namespace, family: str, tag: str) -> Run:
    """Accelerator, seeds, TF32, run directory and resolved config (printed, and written on the main process)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    name = args.name or run_name(family, args, tag)
    run_dir = Path(args.out) / name
    if args.dry_run:
        print(json.dumps({"family": family, "run_dir": str(run_dir), **config_of(args)}, indent=2, default=str))
        sys.exit(0)
    if not args.resume:
        refuse_to_overwrite(run_dir)
    ensure_cpu_distributed()
    try:
        accelerator = Accelerator(mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum,
                                  project_config=ProjectConfiguration(project_dir=str(run_dir),
                                                                      logging_dir=str(run_dir / "tb")),
                                  log_with=_trackers())
    except (ValueError, RuntimeError) as e:  # e.g. a precision this device does not support
        raise SystemExit(f"error: cannot set up Accelerate: {(str(e).strip().splitlines() or [''])[0][:200]}") from None
    if accelerator.device.type == "cpu":
        from utils.fastpath import cpu_threads_for_launch
        threads = cpu_threads_for_launch(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
        if threads is not None:
            torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    # Per-process seeds differ (rank offset) so that processes draw different noise, as DiT does.
    set_seed(args.seed + accelerator.process_index)
    run = Run(args, family, accelerator, run_dir)
    install_oom_hook(run)
    run.pending_config = {"family": family, "command": " ".join(sys.argv), "num_processes": accelerator.num_processes,
                          **config_of(args)}
    if run.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if accelerator.trackers == [] and _trackers():
            accelerator.init_trackers("tb", config=_flat_config(args))
    if not args.resume:
        run.commit_config()  # a resumed run's config.json is replaced only once the resume succeeded
    threads = f" ({torch.get_num_threads()} threads)" if accelerator.device.type == "cpu" else ""
    run.print(f"[{family}] run dir {run_dir} | {accelerator.num_processes} process(es) on {accelerator.device}{threads} | "
              f"mixed precision {args.mixed_precision}")
    if accelerator.device.type == "cpu" and args.mixed_precision == "no":
        from utils.fastpath import bf16_is_native
        if bf16_is_native("cpu"):  # numerics change, so it stays opt-in; say what it is worth
            run.print("note: this CPU computes bf16 in hardware (AMX/AVX512-BF16); on a 2-core Xeon, --mixed-precision "
                      "bf16 --channels-last trained the full-width UNet and VAE 2.3-2.6x faster than fp32 (WGAN-GP: "
                      "no gain; docs/PERFORMANCE.md)")
    run.print(json.dumps(config_of(args), default=str))
    return run


def oom_message(error: BaseException, advice: str) -> str:
    """One line for an out-of-memory error: what ran out (the first line of torch's message) and what to change."""
    first = (str(error).strip().splitlines() or ["out of memory"])[0]
    return f"error: out of memory: {first[:160]}; {advice}"


_OOM_RUN: list = []  # the run the out-of-memory hook reports on (the latest setup_run of this process)


def install_oom_hook(run: "Run") -> None:
    """An uncaught CUDA out-of-memory error ends a training process with one line instead of a traceback.

    Nothing is lost (checkpoints are written atomically), so the line says what to lower and where the run can
    continue from.  An excepthook rather than a try/except in every trainer: it sees an OOM raised anywhere in the
    step, and leaves every other exception's traceback alone.  Installed once per process; later runs (trainers
    called in-process) only replace the run it reports on.
    """
    if not _OOM_RUN:
        previous = sys.excepthook

        def hook(kind, value, tb):
            if not isinstance(value, torch.cuda.OutOfMemoryError):
                return previous(kind, value, tb)
            r = _OOM_RUN[0]
            pointer = r.dir / "checkpoints" / "latest"
            latest = pointer.read_text().strip() if pointer.is_file() else ""
            where = (f"continue from checkpoint {latest} with the same command and --resume latest" if latest
                     else "no checkpoint was written yet")
            a = r.args
            print(oom_message(value, f"--batch-size {a.batch_size} at {a.resolution}x{a.resolution} with "
                                     f"--mixed-precision {a.mixed_precision} does not fit; lower --batch-size or "
                                     f"use --mixed-precision bf16; {where}"), file=sys.stderr)

        sys.excepthook = hook
    _OOM_RUN[:] = [run]


def refuse_to_overwrite(run_dir: Path) -> None:
    """A fresh run must not clobber a run directory that holds training results (checkpoints or an export):
    its checkpoint rotation would delete the old checkpoints and its export would replace the old one."""
    ckpts = sorted((run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else []
    if ckpts or (run_dir / "export.safetensors").exists():
        what = f"checkpoints up to {ckpts[-1].name}" if ckpts else "an export"
        raise SystemExit(f"error: {run_dir} already holds a run ({what}); add --resume latest to continue it, "
                         f"or pass another --name/--out for a new run")


def ensure_cpu_distributed() -> None:
    """Make `accelerate launch --multi_gpu --num_processes N` work on a machine without CUDA.

    Without CUDA, Accelerate (1.15) leaves such processes in DistributedType.NO: N independent rank-0 runs
    that all write the same files. ACCELERATE_USE_CPU turns them into one gloo (MULTI_CPU) job.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def close_process_group(*, wait: bool) -> None:
    """Leave the torch.distributed group (if any) while the interpreter is still alive.

    Gloo's worker threads can still hold the tensors of finished collectives when a process exits; freeing them
    during interpreter finalisation aborts it (SIGABRT: seen once in CI on evaluate.py's rank 1, which returns
    while rank 0 writes the results; pytorch/pytorch#179291). ``wait`` first lets every process reach this point:
    only on the success path, since after an error a peer may never arrive.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def _trackers():
    try:
        import tensorboard  # noqa: F401
        return ["tensorboard"]
    except ImportError:
        return None


def _flat_config(args) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config_of(args).items()}


def train_batches(run: Run, images: torch.Tensor, seed: int) -> Batches:
    """This process's share of seeded, resumable --batch-size batches of ``images``, held on the device when
    --data-on-device allows."""
    acc = run.accelerator
    return Batches(images, run.args.batch_size, seed=seed, rank=acc.process_index, world=acc.num_processes,
                   device=run.device, on_device=data_on_device(run.args, images, run.device))


def data_on_device(args, images: torch.Tensor, device: torch.device) -> bool:
    if args.data_on_device != "auto":
        return args.data_on_device == "yes"
    if device.type != "cuda":
        return True  # on CPU "the device" is host memory: no copy either way
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() < 0.25 * free


def is_due(step: int, period: int) -> bool:
    """True on steps that are multiples of ``period`` (period 0 = never). ``step`` counts completed steps."""
    return period > 0 and step > 0 and step % period == 0
