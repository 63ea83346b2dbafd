"""Training throughput: our loop vs a textbook loop of the same model, loss and batch, in one run.

    python bench/train_throughput.py --family ddpm --preset 4.1                 # GPU: 64², batch 64, bf16 + compile
    python bench/train_throughput.py --family gan --preset 2.1 --device cpu     # CPU: 32², batch 16, widths / 4
    python bench/train_throughput.py --family gan --preset 2.1 --device cpu --size full --batch-size 16  # full widths

Both loops train the SAME networks (built by the trainers' own builders from the preset's flags, resolved by the
trainers' own parsers in utils/<family>_flags.py; same seed) with the SAME loss functions (imported from
utils/<family>_training.py and models/, as the trainers do; not re-implemented).  They differ only in how the step is
driven:

* textbook: a torch DataLoader over a folder of JPEGs (written from the uint8 cache before timing) decoded with
  PIL every step, RandomHorizontalFlip/ToTensor/Normalize, ``--workers`` processes (2, as a typical user sets),
  fp32 (or ``--textbook-precision fp16``: autocast + GradScaler, the "mixed" row), the optimizer's default
  implementation, a host copy of the loss (``loss.item()``) every step, a per-parameter EMA loop.
* ours: the uint8 set held on the device and sliced per step (utils.data.Batches), batched on-device
  augmentation (utils.augment), Accelerate autocast (bf16 where the hardware computes it: GPUs, AMX CPUs),
  channels_last, fused/foreach optimizers and torch.compile (utils.fastpath), no host sync in the step except
  the one the trainers need to skip non-finite steps.  The step is the trainers' own: ``critic_update``/
  ``generator_update`` (utils/gan_training.py), ``vae_update`` (utils/vae_training.py), ``ddpm_update``/``lr_at``
  (utils/ddpm_training.py), with the statements of the trainer's loop body around it.

A "step" is one generator/VAE/UNet update (GAN: after --n-critic critic updates, each on its own batch), so
images/s = steps × batch / s is what the trainers log.  FLOPs per step are counted once with
torch.utils.flop_counter.FlopCounterMode (forward + backward, gradient penalty included; the same for both loops);
TFLOP/s = FLOPs / step time, MFU = TFLOP/s / the device's dense peak for the loop's compute dtype (table below).
Peak memory: torch.cuda.max_memory_allocated (includes the on-device data set for our loop); on CPU the growth of
the main process's resident set (sampled every step from /proc/self/statm; DataLoader workers not included).
The two loops alternate over --rounds rounds and the median round is reported, so a busy machine slows both.

Presets mirror the results-table scripts (scripts/gan_2.*.sh, vae_3.*.sh, ddpm_4.*.sh); tests/test_fastpath.py
checks that they still agree with the scripts' flags.  Results go to
docs/results/train_throughput_<family>_<preset>_<device>.json; bench/make_performance_md.py summarises them.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from utils import fastpath  # noqa: E402
from utils.export import atomic_write_json  # noqa: E402
from utils.row_scripts import row_script  # noqa: E402
from utils.row_scripts import trainer_flags as trainer_flags_of  # noqa: E402

# ------------------------------------------------------------------------------------------------ presets
# Each row's model/loss flags, read from its script (utils/row_scripts.py); precision, data, size and run name are
# the bench's own variables.  3.3's discriminator starts after --disc-start in training; the bench times the
# steady state (discriminator on) whatever that flag says.
ROWS = {"gan": ("2.1", "2.2", "2.3", "2.4"), "vae": ("3.1", "3.2", "3.3"), "ddpm": ("4.1", "4.2", "4.3", "4.4")}
PRESETS: dict[str, dict[str, list[str]]] = {f: {r: trainer_flags_of(row_script(f, r)) for r in rows}
                                             for f, rows in ROWS.items()}
# The flags that set a row's width, divided by --width-div for CPU-sized runs.
WIDTH_FLAGS = {"gan": ("--ngf", "--ndf"), "vae": ("--base-channels",), "ddpm": ("--base-channels",)}
# CPU-sized runs ('--size cpu'): the row's architecture at 32², batch 16, widths / 4 (UNet / 8): a 2-core step ~1 s.
# The UNet is ~10x the FLOPs of the GAN/VAE at equal width, so its CPU size divides widths by 8.
SIZES = {"full": dict(resolution=None, batch=64, width_div=1), "cpu": dict(resolution=32, batch=16, width_div=4)}
CPU_WIDTH_DIV = {"gan": 4, "vae": 4, "ddpm": 8}

# Dense peak TFLOP/s per compute dtype (NVIDIA datasheets; fp32 = TF32 tensor cores, which cuDNN convolutions use
# by default).  Matched by substring of torch.cuda.get_device_name(), first match wins.
DEVICE_PEAKS = [
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7}),     # SXM
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7}),     # same compute as H100 SXM
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "fp32": 183.0}),
    ("RTX 4090", {"bf16": 165.2, "fp16": 165.2, "fp32": 82.6}),
]


def device_peak(device: torch.device, dtype: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in DEVICE_PEAKS:
        if key in name:
            return peaks[dtype]
    return None


# ------------------------------------------------------------------------------------------------ arguments

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Training images/s: our loop vs a textbook loop of the same model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--family", type=str, required=True, choices=sorted(PRESETS), help="model family")
    p.add_argument("--preset", type=str, required=True, help="results-table row: gan 2.1-2.4, vae 3.1-3.3, ddpm 4.1-4.4")
    p.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--size", type=str, default="auto", choices=["auto", "full", "cpu"],
                   help="full: the row's resolution, batch 64; cpu: 32², batch 16, widths / 4 (UNet / 8) (auto: by device)")
    p.add_argument("--resolution", type=int, default=None, choices=[16, 32, 64, 128], help="override --size's")
    p.add_argument("--batch-size", type=int, default=None, help="override --size's batch")
    p.add_argument("--width-div", type=int, default=None, help="divide the row's widths by this (override --size's)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round and loop (default 20 GPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per loop first (default 10 GPU, 1 CPU)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median round is reported")
    p.add_argument("--workers", type=int, default=2, help="textbook DataLoader workers (a typical user's 2)")
    p.add_argument("--textbook-precision", type=str, default="fp32", choices=["fp32", "fp16"],
                   help="fp16 = autocast + GradScaler (the 'mixed' textbook row)")
    p.add_argument("--precision", type=str, default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="our loop's --mixed-precision (auto: bf16 where the device computes it in hardware: CUDA, "
                        "and CPUs with AMX/AVX512-BF16 at --size full; else no)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="our loop in NHWC (default: on for CUDA and for bf16 on CPU, where oneDNN's bf16 "
                        "convolutions want NHWC; off for fp32 on CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile our loop's modules as the trainers do (default: on for CUDA, off for CPU)")
    p.add_argument("--optimizer-impl", type=str, default="auto", choices=fastpath.OPTIMIZER_IMPLS,
                   help="our loop's optimizer kernels")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="weights and data order")
    p.add_argument("--out", type=str, default=None,
                   help="JSON path (default docs/results/train_throughput_<family>_<preset>_<device>.json)")
    p.add_argument("--note", type=str, default="", help="free text stored in the JSON (e.g. 'machine loaded')")
    args = p.parse_args(argv)
    if args.preset not in PRESETS[args.family]:
        p.error(f"unknown --preset {args.preset!r} for {args.family}; rows: {', '.join(PRESETS[args.family])}")
    for name in ("steps", "warmup", "batch_size", "width_div"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be ≥ {0 if name == 'warmup' else 1}")
    if args.rounds < 1 or args.workers < 0:
        p.error("--rounds must be ≥ 1 and --workers ≥ 0")
    return args


def resolve(args) -> None:
    """Fill the device-dependent defaults in place."""
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    gpu = args.device == "cuda"
    size = SIZES["full" if (args.size == "full" or (args.size == "auto" and gpu)) else "cpu"]
    args.size = "full" if size is SIZES["full"] else "cpu"
    args.batch_size = args.batch_size or size["batch"]
    args.width_div = args.width_div or (CPU_WIDTH_DIV[args.family] if args.size == "cpu" else size["width_div"])
    args.resolution = args.resolution or size["resolution"]
    args.steps = args.steps or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    # bf16 where the device computes it in hardware.  On a CPU only at full widths, so that the CPU size compares the
    # two loops at the same precision (fp32): it isolates the data path, optimizer kernels and syncs.  (At the CPU
    # size bf16 helps some rows and hurts others: ddpm 4.1 1.13x in fp32 vs 0.90x in bf16, the VGG-heavy vae 3.2
    # 1.06x vs 2.25x; docs/results/logs/run_all_cpu_train_2026-12-02.log has the bf16 runs.)
    args.precision = args.precision if args.precision != "auto" else \
        ("bf16" if fastpath.bf16_is_native(args.device) and (gpu or args.size == "full") else "no")
    if args.channels_last is None:
        args.channels_last = gpu or args.precision == "bf16"
    args.compile = gpu if args.compile is None else args.compile


def default_name(args) -> str:
    """train_throughput_<family>_<preset>_<device>[_<size>-b<batch>].json; the suffix only off the device's default
    size, so a CPU run at the row's full widths does not replace the CPU-sized one."""
    size = "full" if args.device == "cuda" else "cpu"
    default = (size, SIZES[size]["batch"], 1 if size == "full" else CPU_WIDTH_DIV[args.family])
    suffix = "" if (args.size, args.batch_size, args.width_div) == default else f"_{args.size}-b{args.batch_size}"
    return f"train_throughput_{args.family}_{args.preset}_{args.device}{suffix}.json"


def trainer_flags(args) -> list[str]:
    """The preset's flags with the bench's size applied (resolution, batch, widths, precision)."""
    flags = list(PRESETS[args.family][args.preset])
    defaults = vars(trainer_parse_args(args.family)([]))
    for name in WIDTH_FLAGS[args.family]:
        if name not in flags:  # the row keeps the trainer's default width
            flags += [name, str(defaults[name[2:].replace("-", "_")])]
        i = flags.index(name)
        flags[i + 1] = str(max(8, int(flags[i + 1]) // args.width_div))
    if args.resolution:
        if "--resolution" in flags:
            flags[flags.index("--resolution") + 1] = str(args.resolution)
        else:
            flags += ["--resolution", str(args.resolution)]
    flags += ["--batch-size", str(args.batch_size), "--mixed-precision", args.precision, "--data", "synthetic"]
    if args.family == "vae" and "--lambda-perc" in flags and float(flags[flags.index("--lambda-perc") + 1]) > 0:
        flags += ["--vgg-init", "random"]  # throughput does not depend on the VGG weights; no download
    return flags


def trainer_args(args):
    targs = trainer_parse_args(args.family)(trainer_flags(args))
    targs.channels_last, targs.optimizer_impl, targs.compile = args.channels_last, args.optimizer_impl, args.compile
    return targs


def trainer_parse_args(family: str):
    """The trainer's own flag parser (utils/<family>_flags.py), so that a preset resolves exactly as the row script
    does (per-loss defaults, flag checks).  Imported per family: the DDPM's pulls in diffusers."""
    if family == "gan":
        from utils.gan_flags import parse_args
    elif family == "vae":
        from utils.vae_flags import parse_args
    else:
        from utils.ddpm_flags import parse_args
    return parse_args


# ------------------------------------------------------------------------------------------------ models

def build_models(family: str, targs, device: torch.device) -> dict:
    """The trainers' networks for these flags (same seed → same initial weights on every call)."""
    if family == "gan":
        from utils.gan_training import build_nets, model_config
        G, D = build_nets(targs, model_config(targs))
        return {"G": G.to(device), "D": D.to(device)}
    if family == "vae":
        from utils.vae_training import build_nets, model_config
        nets = dict(zip(("vae", "disc", "perceptual"), build_nets(targs, model_config(targs), device)))
        return {k: m.to(device) for k, m in nets.items() if m is not None}
    from models.ddpm import DiffusionModel, train_scheduler
    from utils.ddpm_training import model_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(targs.seed)
        model = DiffusionModel(model_config(targs)).to(device)
    return {"model": model, "scheduler": train_scheduler(model.config)}


# ------------------------------------------------------------------------------------------------ our loop

def our_step(family: str, targs, models: dict, data, device: torch.device) -> Callable[[], dict]:
    """One training step as the trainer runs it, with the fast-path options in ``targs``.

    The step returns its losses as detached 0-d tensors (no host sync); ``models`` are trained in place."""
    from accelerate import Accelerator

    from utils.augment import build_augment
    from utils.data import Batches
    from utils.trainer_setup import prepare_models

    acc = Accelerator(mixed_precision=targs.mixed_precision, cpu=device.type == "cpu")
    batches = Batches(data.train, targs.batch_size, seed=targs.seed, device=device, on_device=True)
    augment = build_augment(targs.aug)

    def next_batch():
        return batches.next()  # NCHW: NHWC weights make the activations NHWC (utils.fastpath.channels_last_)

    if family == "gan":
        from models.losses import LOSSES
        from utils.diffaug import DiffAugment
        from utils.gan_training import critic_iters, critic_update, generator_update
        from utils.optim import make_optimizer
        G, D = models["G"], models["D"]
        opt_g = make_optimizer(targs, G.parameters(), targs.lr_g)
        opt_d = make_optimizer(targs, D.parameters(), targs.lr_d)
        # As in train_gan.py, no compiled critic under wgan-gp: the penalty's double backward cannot be compiled.
        ema, (G, D, opt_g, opt_d) = prepare_models(acc, targs, G, [G, D, opt_g, opt_d],
                                                   compiled=[G] if targs.loss == "wgan-gp" else None)
        loss, diffaug, state = LOSSES[targs.loss], DiffAugment(targs.diffaug), {"step": 0}

        def step():
            x = next_batch()
            for i in range(critic_iters(targs, state["step"])):
                d = critic_update(acc, G, D, opt_d, augment(x if i == 0 else next_batch()), loss, targs, diffaug)
            g = generator_update(acc, G, D, opt_g, x.shape[0], loss, targs, diffaug)
            if d["ok"] and g["ok"]:  # loop.tick's bool
                ema.update(acc.unwrap_model(G))
            state["step"] += 1
            return {k: v for k, v in {**d, **g}.items() if isinstance(v, torch.Tensor)}
        return step

    if family == "vae":
        from models.losses import LOSSES
        from utils.tracking import RunningMeans
        from utils.vae_training import make_optimizers, vae_update
        vae, disc, perceptual = models["vae"], models.get("disc"), models.get("perceptual")
        opt, opt_d = make_optimizers(targs, vae, disc)
        ema, (vae, opt, disc, opt_d) = prepare_models(acc, targs, vae, [vae, opt, disc, opt_d], layout=[perceptual])
        gan, running = LOSSES[targs.disc_loss], RunningMeans()

        def step():  # the statements of train_vae.main's loop body
            terms, ok = vae_update(acc, vae, opt, disc, opt_d, gan, perceptual, augment(next_batch()), targs)
            if not ok:
                return terms
            ema.update(acc.unwrap_model(vae))
            running.add(terms)
            return {k: v.detach() for k, v in terms.items()}
        return step

    from utils.ddpm_training import QuartileLoss, ddpm_update, lr_at
    model, scheduler = models["model"], models["scheduler"]
    opt = fastpath.make_optimizer(torch.optim.AdamW, model.parameters(), targs.optimizer_impl, lr=targs.lr,
                                  betas=(targs.beta1, targs.beta2), weight_decay=targs.weight_decay)
    ema, (model, opt) = prepare_models(acc, targs, model, [model, opt], compiled=[model.unet])
    quartiles = QuartileLoss(acc.unwrap_model(model).config.num_train_timesteps, device)
    state = {"step": 0}

    def step():  # the statements of train_ddpm.main's loop body
        for group in opt.param_groups:
            group["lr"] = lr_at(state["step"], targs)
        per_sample, t, _, ok = ddpm_update(acc, model, scheduler, opt, augment(next_batch()), targs)
        if ok:
            ema.update(acc.unwrap_model(model))
            quartiles.add(per_sample, t)
        state["step"] += 1
        return {"loss": per_sample.detach().mean()}
    return step


# ------------------------------------------------------------------------------------------------ textbook loop

class JpegFolder(torch.utils.data.Dataset):
    """What a textbook loop reads: image files decoded with PIL on every access."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB"))


def write_jpegs(images: torch.Tensor, folder: Path) -> list[Path]:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        f = folder / f"{i:06d}.jpg"
        Image.fromarray(img).save(f, quality=95)
        files.append(f)
    return files


def textbook_loader(files, batch_size: int, workers: int, device: torch.device):
    from torchvision import transforms
    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    loader = torch.utils.data.DataLoader(JpegFolder(files, tf), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, pin_memory=device.type == "cuda")

    def batches():
        while True:  # epoch after epoch; each new epoch starts its workers again, as in a textbook loop
            yield from loader
    return batches()


def textbook_step(family: str, targs, models: dict, files, device: torch.device, precision: str,
                  workers: int) -> Callable[[], None]:
    """The same model and loss, driven the textbook way (see the module docstring)."""
    it = textbook_loader(files, targs.batch_size, workers, device)
    fp16 = precision == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def autocast():
        return torch.autocast(device.type, dtype=torch.float16, enabled=fp16)

    def backward_step(loss, opt):
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def ema_update(ema, model, decay=0.999):
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(decay).add_(p, alpha=1 - decay)

    def real():
        return next(it).to(device)

    if family == "gan":
        from models.losses import LOSSES, clip_weights_, gradient_penalty
        G, D = models["G"], models["D"]
        loss = LOSSES[targs.loss]
        ema = copy.deepcopy(G).requires_grad_(False)
        opt_g, opt_d = textbook_optimizer(targs, G, targs.lr_g), textbook_optimizer(targs, D, targs.lr_d)

        def step():
            for _ in range(targs.n_critic):
                x = real()
                with autocast():
                    fake = G(torch.randn(x.shape[0], targs.latent_dim, device=device)).detach()
                    d_loss = loss.d_loss(D(x), D(fake), targs.label_smoothing)
                if targs.loss == "wgan-gp":
                    d_loss = d_loss + gradient_penalty(lambda v: D(v, fp32=True), x, fake, targs.gp_lambda)[0]
                backward_step(d_loss, opt_d)
                if targs.loss == "wgan-clip":
                    clip_weights_(D, targs.clip)
            with autocast():
                g_loss = loss.g_loss(D(G(torch.randn(x.shape[0], targs.latent_dim, device=device))))
            backward_step(g_loss, opt_g)
            ema_update(ema, G)
            _ = (d_loss.item(), g_loss.item())  # the per-step print
        return step

    if family == "vae":
        from models.losses import LOSSES
        from utils.vae_training import DISC_BETAS, disc_terms, last_layer_weight, vae_terms
        vae, disc, perceptual = models["vae"], models.get("disc"), models.get("perceptual")
        gan = LOSSES[targs.disc_loss]
        ema = copy.deepcopy(vae).requires_grad_(False)
        opt = torch.optim.Adam(vae.parameters(), lr=targs.lr, betas=(targs.adam_beta1, targs.adam_beta2))
        opt_d = torch.optim.Adam(disc.parameters(), lr=targs.disc_lr, betas=DISC_BETAS) if disc is not None else None

        def step():
            x = real()
            with autocast():
                x_hat, mu, logvar = vae(x)
                terms = vae_terms(targs, x_hat, x, mu, logvar, perceptual, disc, gan,
                                  last_layer=last_layer_weight(vae) if disc is not None else None,
                                  grad_scale=torch.tensor(scaler.get_scale(), device=device) if fp16 else None)
            backward_step(terms["loss"], opt)
            if disc is not None:
                with autocast():
                    d_loss = disc_terms(disc, gan, x, x_hat)["d_loss"]
                backward_step(d_loss, opt_d)
            ema_update(ema, vae)
            _ = terms["loss"].item()
        return step

    from models.ddpm import diffusion_loss
    model, scheduler = models["model"], models["scheduler"]
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=targs.lr, betas=(targs.beta1, targs.beta2),
                            weight_decay=targs.weight_decay)

    def step():
        with autocast():
            loss = diffusion_loss(model, scheduler, real())[0].mean()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), targs.grad_clip)
        scaler.step(opt)
        scaler.update()
        ema_update(ema, model)
        _ = loss.item()
    return step


def textbook_optimizer(targs, module, lr):
    if targs.optimizer == "adam":
        return torch.optim.Adam(module.parameters(), lr=lr, betas=(targs.beta1, targs.beta2))
    if targs.optimizer == "rmsprop":
        return torch.optim.RMSprop(module.parameters(), lr=lr)
    return torch.optim.SGD(module.parameters(), lr=lr, momentum=targs.momentum, nesterov=targs.optimizer == "nesterov")


# ------------------------------------------------------------------------------------------------ measuring

class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker, whose backward hooks break torch.autograd.grad on a leaf
    (the WGAN-GP penalty); only the global total is needed here."""
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one step (forward + backward of every update in it), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        step()
    return int(counter.get_total_flops())


def rss_bytes() -> int:
    """Current resident set of this process (Linux /proc; else the ru_maxrss high-water mark)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_cpu_seconds() -> float:
    """CPU time (user + system) of this process and all its children, live (/proc) or reaped (getrusage).

    On a shared machine wall time mostly measures the scheduler; CPU time, which includes the DataLoader workers'
    decoding, is what a loop costs.  Linux only (elsewhere: this process and reaped children)."""
    import resource
    total = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                for f in ("ru_utime", "ru_stime"))
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # fields[1] = parent pid; [11], [12] = utime, stime in clock ticks
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round(step: Callable[[], None], n: int, device: torch.device) -> dict:
    """Wall time of ``n`` steps (device synchronised at both ends) and the peak memory over them."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0, rss_peak = rss_bytes(), 0
    cpu0, t0 = process_cpu_seconds(), time.perf_counter()
    for _ in range(n):
        step()
        if device.type != "cuda":
            rss_peak = max(rss_peak, rss_bytes())
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - t0, process_cpu_seconds() - cpu0
    mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else max(0, rss_peak - rss0)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "memory_bytes": mem}


def summarise(rounds: list[dict], n: int, batch: int, flops: int, peak: float | None) -> dict:
    secs = [r["seconds"] for r in rounds]
    med = statistics.median(secs)
    tflops = flops / (med / n) / 1e12
    cpu = statistics.median(r["cpu_seconds"] for r in rounds)
    return {"round_seconds": secs, "steps_per_round": n, "step_ms": 1000 * med / n, "images_per_s": n * batch / med,
            "round_cpu_seconds": [r["cpu_seconds"] for r in rounds], "images_per_cpu_s": n * batch / max(cpu, 1e-9),
            "peak_memory_mb": max(r["memory_bytes"] for r in rounds) / 2 ** 20,
            "tflops_per_s": tflops, "mfu": tflops / peak if peak else None}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{fastpath.cpu_description()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "accelerate", "torchvision"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


STEP_SOURCES = {
    "gan": "utils.gan_training.critic_update / generator_update / critic_iters (train_gan.py's step functions)",
    "vae": "utils.vae_training.vae_update (train_vae.py's step function) and RunningMeans",
    "ddpm": "utils.ddpm_training.ddpm_update / lr_at / QuartileLoss (train_ddpm.py's step, its loop body around it)",
}


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> dict:
    args = parse_args(argv)
    resolve(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # trainers' --tf32 default
    targs = trainer_args(args)
    from utils.data import load_face_data

    images_needed = args.batch_size * (args.warmup + args.rounds * args.steps + 1) * getattr(targs, "n_critic", 1)
    with tempfile.TemporaryDirectory(prefix="facegen-bench-") as tmp:
        data = load_face_data("synthetic", targs.resolution, n_real=16, cache_dir=Path(tmp) / "cache",
                              synthetic_size=max(256, min(images_needed, 4096)) + 16, seed=args.seed)
        files = write_jpegs(data.train, Path(tmp) / "jpegs")  # outside the timed region

        textbook_precision = args.textbook_precision
        book = textbook_step(args.family, targs, build_models(args.family, targs, device), files, device,
                             textbook_precision, args.workers)
        ours = our_step(args.family, targs, build_models(args.family, targs, device), data, device)
        flops = count_flops(book)   # same model, batch and loss in both loops; fp32 textbook step, uncompiled
        for _ in range(args.warmup):
            book()
            ours()
        rounds = {"textbook": [], "ours": []}
        for _ in range(args.rounds):  # alternate, so a busy machine slows both alike
            rounds["textbook"].append(time_round(book, args.steps, device))
            rounds["ours"].append(time_round(ours, args.steps, device))

    ours_dtype = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[args.precision]
    results = {"textbook": summarise(rounds["textbook"], args.steps, args.batch_size, flops,
                                     device_peak(device, textbook_precision)),
               "ours": summarise(rounds["ours"], args.steps, args.batch_size, flops, device_peak(device, ours_dtype))}
    ratio = results["ours"]["images_per_s"] / results["textbook"]["images_per_s"]
    cpu_ratio = results["ours"]["images_per_cpu_s"] / results["textbook"]["images_per_cpu_s"]
    report = {
        "bench": "train_throughput", "family": args.family, "preset": args.preset, "size": args.size,
        "device": device.type, "hardware": hardware(device), "versions": versions(),
        "trainer_flags": trainer_flags(args), "resolution": targs.resolution, "batch_size": args.batch_size,
        "width_div": args.width_div, "params": {k: sum(p.numel() for p in m.parameters())
                                                for k, m in build_models(args.family, targs, "cpu").items()
                                                if isinstance(m, torch.nn.Module)},
        "ours_options": {"mixed_precision": args.precision, "channels_last": args.channels_last,
                         "compile": args.compile, "optimizer_impl": args.optimizer_impl, "data_on_device": True},
        "ours_step_source": STEP_SOURCES[args.family],
        "textbook_options": {"precision": textbook_precision, "workers": args.workers, "data": "JPEG folder + PIL",
                             "optimizer": "default implementation", "host_sync": "loss.item() every step"},
        "flops_per_step": flops, "mfu_reference": "dense peak of the loop's compute dtype (fp32 = TF32)"
        if device.type == "cuda" else "n/a on CPU (achieved GFLOP/s only)",
        "memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "growth of the main process's RSS during a round (sampled per step; DataLoader workers excluded)",
        "results": results, "speedup": ratio, "speedup_cpu_time": cpu_ratio,
        "cpu_time_kind": "user+system seconds of the bench process and its children (DataLoader workers included)",
        **fastpath.bench_invocation(), "note": args.note,
    }
    print_report(report)
    out = Path(args.out) if args.out else ROOT / "docs" / "results" / default_name(args)
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return report


def print_report(r: dict) -> None:
    print(f"{r['family']} {r['preset']} @ {r['resolution']}², batch {r['batch_size']}, widths /{r['width_div']}; "
          f"{r['device']} ({r['hardware']}); {r['flops_per_step'] / 1e9:.2f} GFLOP/step")
    unit = "MB (RSS growth)" if r["device"] == "cpu" else "MB"
    for name in ("textbook", "ours"):
        x = r["results"][name]
        mfu = f", MFU {100 * x['mfu']:.1f}%" if x["mfu"] is not None else ""
        print(f"  {name:9s} {x['images_per_s']:9.1f} img/s  {x['step_ms']:9.1f} ms/step  "
              f"{x['images_per_cpu_s']:9.1f} img/CPU-s  {x['peak_memory_mb']:8.0f} {unit}  "
              f"{1000 * x['tflops_per_s']:9.1f} GFLOP/s{mfu}")
    print(f"  speed-up ours / textbook: {r['speedup']:.2f}x wall-clock, {r['speedup_cpu_time']:.2f}x per CPU-second")


if __name__ == "__main__":
    main()
