"""Speed options shared by the trainers, each with its effect on the numbers stated.

=====================  ========================================================================================
option                 numerics
=====================  ========================================================================================
``--channels-last``    NHWC weights and activations (cuDNN's tensor-core layout).  Same maths; a convolution
                       may pick another algorithm, so results agree to float rounding (fp32: ~1e-6 relative),
                       not bitwise.  No effect on loss curves or FID beyond run-to-run noise.
``--optimizer-impl``   ``fused`` (one kernel per step), ``foreach`` (one kernel per op over all tensors),
                       ``for-loop`` (one op per tensor) run the same update rule; they differ only in operation
                       order, i.e. float rounding (~1e-7 relative per step).  ``auto`` = fused where the
                       optimizer and device support it, else foreach.
``--mixed-precision``  bf16 autocast changes numerics (8-bit mantissa in matmuls/convs): losses agree with fp32
                       to ~1e-2 relative per step; trainers keep losses, KL, the gradient penalty and the DDIM
                       update in fp32.  fp16 adds a GradScaler (skipped steps on overflow).  bf16 is a speed-up
                       where the hardware computes in it (``bf16_is_native``): Ampere+ GPUs, and CPUs with AMX
                       or AVX512-BF16 (docs/PERFORMANCE.md has the CPU figures); elsewhere it is emulated.
``--compile``          torch.compile (Inductor) fuses kernels; same maths up to float reassociation (~1e-6).
                       Off by default: the first steps pay the compilation (tens of seconds to minutes).
=====================  ========================================================================================

Static shapes (``Batches`` drops the last partial batch) keep compiled graphs valid; the data lives on the
device (``--data-on-device``) so the step has no host→device copy.  tests/test_fastpath.py checks, per family,
that one step with the CPU-available options gives the same loss and weights as the plain step.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for-loop")


class FastPathError(ValueError):
    """A speed option this optimizer or device cannot honour; the message is one line."""


# ---------------------------------------------------------------------------------------------- optimizers

def supports_fused(optimizer_cls: type[torch.optim.Optimizer], device: torch.device | str) -> bool:
    """Whether ``optimizer_cls(..., fused=True)`` exists for parameters on ``device``.

    Adam/AdamW/SGD/Adagrad have fused kernels for CUDA and (torch ≥ 2.4) CPU; RMSprop has none.
    """
    if "fused" not in inspect.signature(optimizer_cls.__init__).parameters:
        return False
    dev = torch.device(device).type
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        return dev in _get_fused_kernels_supported_devices()
    except ImportError:  # private helper moved: CUDA always had the kernels
        return dev == "cuda"


def impl_kwargs(optimizer_cls: type[torch.optim.Optimizer], impl: str, device: torch.device | str) -> dict:
    """The constructor keywords that select ``impl`` ('auto' | 'fused' | 'foreach' | 'for-loop')."""
    if impl not in OPTIMIZER_IMPLS:
        raise FastPathError(f"optimizer implementation must be one of {', '.join(OPTIMIZER_IMPLS)}, got {impl!r}")
    fused_ok = supports_fused(optimizer_cls, device)
    if impl == "fused" and not fused_ok:
        raise FastPathError(f"{optimizer_cls.__name__} has no fused implementation on {torch.device(device).type}; "
                            f"use --optimizer-impl foreach")
    if impl == "fused" or (impl == "auto" and fused_ok):
        return {"fused": True}
    return {"foreach": impl != "for-loop"}


def make_optimizer(optimizer_cls: type[torch.optim.Optimizer], params, impl: str = "auto",
                   device: torch.device | str | None = None, **hyper) -> torch.optim.Optimizer:
    """``optimizer_cls(params, **hyper)`` with the chosen kernel implementation (same update rule for all).

    ``device``: where the parameters live (default: the first parameter's device).
    """
    params = list(params)
    if device is None:
        first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
        device = first.device
    return optimizer_cls(params, **hyper, **impl_kwargs(optimizer_cls, impl, device))


def describe_optimizer(opt: torch.optim.Optimizer) -> str:
    g = opt.param_groups[0]
    kind = "fused" if g.get("fused") else ("foreach" if g.get("foreach") else "for-loop")
    return f"{type(opt).__name__} ({kind})"


# ---------------------------------------------------------------------------------------------- precision

def bf16_is_native(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matmuls/convolutions in hardware, so bf16 autocast is a speed-up and not
    an emulation: CUDA GPUs with bf16 (Ampere and later); CPUs with AMX tiles (Intel Xeon 4th gen and later) or
    AVX512-BF16 (e.g. AMD Zen 4), which oneDNN uses for bf16 convolutions."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def cpu_threads_for_launch(local_processes: int) -> int | None:
    """Intra-op threads for a CPU process started by ``accelerate launch``, or None to keep torch's choice.

    accelerate launch exports OMP_NUM_THREADS=1 to every process of a CPU run unless the caller exported a value
    (its launcher only picks more for ``--cpu``), so a single-process ``accelerate launch train_*.py`` would use one
    core of the machine.  Under that launcher an OMP_NUM_THREADS of 1 is therefore read as "unset": the cores
    this process may run on are shared among the processes of this machine.  ``$FACEGEN_THREADS`` overrides both
    (the test suite sets it to 1 so that its launches do not oversubscribe the machine).
    """
    import os
    if "ACCELERATE_DYNAMO_BACKEND" not in os.environ:   # exported by accelerate launch to every child it starts
        return None
    if os.environ.get("FACEGEN_THREADS"):
        return max(1, int(os.environ["FACEGEN_THREADS"]))
    if os.environ.get("OMP_NUM_THREADS", "1") != "1":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_processes))


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere platform.processor()), for benchmark records."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def cpu_description() -> str:
    """'<model name>, bf16 native' or '<model name>': what a CPU benchmark figure was measured on."""
    import platform
    name = cpu_model() or platform.machine()
    return f"{name}, bf16 native" if bf16_is_native("cpu") else name


def bench_invocation() -> dict:
    """The command line that ran this benchmark (re-runnable as printed) and the machine's load average then."""
    import os
    import shlex
    import sys
    from pathlib import Path
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])
    return {"command": command, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


# ---------------------------------------------------------------------------------------------- memory format

def _contiguous_state_dict(module, state_dict, prefix, local_metadata):
    """safetensors (checkpoints, exports) stores only contiguous tensors: pack NHWC weights on save."""
    for k, v in state_dict.items():
        if isinstance(v, torch.Tensor) and not v.is_contiguous():
            state_dict[k] = v.contiguous()


def channels_last_(module: nn.Module) -> nn.Module:
    """Convert 4-D weights (and buffers) to NHWC in place.

    Activations follow: a convolution with an NHWC weight returns NHWC, so batches need no conversion.
    ``state_dict()`` keeps returning contiguous tensors (safetensors refuses others), so checkpoints and exports
    are unchanged; loading a state dict copies into the NHWC tensors."""
    module.to(memory_format=torch.channels_last)
    if not getattr(module, "_fastpath_channels_last", False):
        module.register_state_dict_post_hook(_contiguous_state_dict)
        module._fastpath_channels_last = True
    return module


# ---------------------------------------------------------------------------------------------- compilation

def compile_(module: nn.Module, enabled: bool = True) -> nn.Module:
    """torch.compile in place (``nn.Module.compile``): parameter names, hence checkpoints, stay the same."""
    if enabled:
        module.compile()
    return module


# ---------------------------------------------------------------------------------------------- flags

def add_fastpath_args(group) -> None:
    """The speed flags next to --compile / --mixed-precision (utils/run.py puts them in the common group)."""
    group.add_argument("--channels-last", action="store_true",
                       help="NHWC weights, activations follow (GPU speed; same maths, float-rounding-level differences)")
    group.add_argument("--optimizer-impl", type=str, default="auto", choices=OPTIMIZER_IMPLS,
                       help="optimizer kernels: fused/foreach/for-loop run the same update rule (differences at "
                            "float rounding); auto = fused where supported, else foreach")


def fastpath_summary(args) -> str:
    parts = [f"mixed precision {getattr(args, 'mixed_precision', 'no')}",
             f"optimizer impl {getattr(args, 'optimizer_impl', 'auto')}"]
    parts += ["channels_last"] if getattr(args, "channels_last", False) else []
    parts += ["compile"] if getattr(args, "compile", False) else []
    return "fast path: " + ", ".join(parts)
