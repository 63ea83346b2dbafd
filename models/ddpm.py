"""DDPM family (plan phase 4): a diffusers ``UNet2DModel`` denoiser, its noise schedule, and a DDIM sampler.

* Training objective: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (simple loss, ε target), or
  v-prediction (Salimans & Ho 2022, "Progressive Distillation"): v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀.
* Schedules: linear β (Ho et al.) or cosine ᾱ (Nichol & Dhariwal 2021, "Improved DDPM"; diffusers'
  ``squaredcos_cap_v2``).
* Sampling: DDIM (Song et al. 2021) over diffusers' ``DDIMScheduler``, built from the training schedule.

``DiffusionModel`` is the exported root module (what the EMA tracks): the UNet plus the schedule/sampler config.
Its ``sample`` draws the starting noise on the CPU (or on the given generator's device), so a seed gives the same
images on any device, and with ``eta=0`` in fp32 it reproduces ``diffusers.DDIMPipeline`` on the same UNet.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from models.layers import check_config_keys

BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # our flag value -> diffusers' name
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")
SAMPLE_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DiffusionConfigError(ValueError):
    """An impossible model configuration; the message is one line for the user."""


def default_channel_mult(resolution: int) -> tuple[int, ...]:
    """Per-level channel multipliers, one level per resolution from ``resolution`` down to 4² (16², 32²) or 8².

    32² follows Ho et al.'s CIFAR-10 net (1, 2, 2, 2); 64² keeps that shape down to 8² and 128² adds a level.
    """
    table = {16: (1, 2, 2), 32: (1, 2, 2, 2), 64: (1, 2, 2, 2), 128: (1, 1, 2, 2, 2)}
    if resolution not in table:
        raise DiffusionConfigError(f"no default channel multipliers for resolution {resolution}; "
                                   f"pass them explicitly (e.g. --channel-mult 1,2,2,2)")
    return table[resolution]


@dataclass
class DiffusionConfig:
    resolution: int = 64
    base_channels: int = 128
    channel_mult: tuple[int, ...] | None = None   # None -> default_channel_mult(resolution), resolved on init
    layers_per_block: int = 2
    attn_res: tuple[int, ...] = (8, 16)           # feature-map sizes that get self-attention (where they exist)
    attn_head_dim: int | None = None              # None: one head per attention layer, as in Ho et al.
    dropout: float = 0.1                          # Ho et al. CIFAR-10 value
    beta_schedule: str = "linear"                 # 'linear' | 'cosine'
    beta_start: float = 1e-4                      # linear schedule ends (Ho et al.)
    beta_end: float = 0.02
    prediction_type: str = "epsilon"              # 'epsilon' | 'v_prediction'
    num_train_timesteps: int = 1000
    clip_sample: bool = True                      # clamp predicted x0 to [-1, 1] at each sampling step
    # DDIM sampler defaults (sample() can override them). 'trailing' starts at t = T-1, the fully-noised step
    # that training saw (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    timestep_spacing: str = "trailing"
    set_alpha_to_one: bool = True                 # last DDIM step lands on ᾱ = 1 (a clean image)
    sample_steps: int = 100                       # default DDIM steps of sample() (plan: 100)
    eta: float = 0.0                              # default DDIM η of sample() (0 = deterministic)

    def __post_init__(self):
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise DiffusionConfigError(f"resolution must be a power of two ≥ 8, got {self.resolution}")
        self.channel_mult = tuple(int(m) for m in (self.channel_mult or default_channel_mult(self.resolution)))
        self.attn_res = tuple(sorted({int(r) for r in self.attn_res}))
        self.validate()

    def validate(self) -> None:
        def bad(msg):
            raise DiffusionConfigError(msg)
        if self.base_channels <= 0 or self.layers_per_block <= 0:
            bad("base_channels and layers_per_block must be positive")
        if not self.channel_mult or min(self.channel_mult) <= 0:
            bad(f"channel multipliers must be positive integers, got {self.channel_mult}")
        if self.resolution >> (len(self.channel_mult) - 1) < 2:
            bad(f"{len(self.channel_mult)} levels downsample a {self.resolution}² image below 2²; "
                "use fewer multipliers")
        if self.beta_schedule not in BETA_SCHEDULES:
            bad(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            bad(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            bad(f"timestep_spacing must be one of {', '.join(TIMESTEP_SPACINGS)}, got {self.timestep_spacing!r}")
        if self.num_train_timesteps < 2:
            bad(f"num_train_timesteps must be ≥ 2, got {self.num_train_timesteps}")
        if not 1 <= self.sample_steps <= self.num_train_timesteps:
            bad(f"sample_steps must be in [1, {self.num_train_timesteps}], got {self.sample_steps}")
        if not 0.0 <= self.eta <= 1.0:
            bad(f"eta must be in [0, 1], got {self.eta}")
        if not 0.0 <= self.dropout < 1.0:
            bad(f"dropout must be in [0, 1), got {self.dropout}")
        channels = self.block_channels
        if self.attn_head_dim is not None:
            for r, c in zip(self.level_resolutions, channels):
                if r in self.attn_res and c % self.attn_head_dim:
                    bad(f"attention head dim {self.attn_head_dim} does not divide {c} channels at {r}²")

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        return tuple(self.resolution >> i for i in range(len(self.channel_mult)))

    @property
    def attention_levels(self) -> tuple[int, ...]:
        """The listed attention resolutions that exist in this UNet (the bottleneck always has attention)."""
        return tuple(r for r in self.level_resolutions if r in self.attn_res)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        check_config_keys(cls, d, DiffusionConfigError, "DDPM")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Network and schedules
# ---------------------------------------------------------------------------------------------------------------

def build_unet(config: DiffusionConfig):
    """diffusers UNet2DModel with attention blocks exactly at ``config.attn_res`` ∩ the UNet's resolutions."""
    from diffusers import UNet2DModel

    channels = config.block_channels
    down = tuple("AttnDownBlock2D" if r in config.attn_res else "DownBlock2D" for r in config.level_resolutions)
    # Up blocks run from the bottleneck back to full resolution.
    up = tuple("AttnUpBlock2D" if r in config.attn_res else "UpBlock2D" for r in reversed(config.level_resolutions))
    return UNet2DModel(
        sample_size=config.resolution, in_channels=3, out_channels=3,
        down_block_types=down, up_block_types=up, block_out_channels=channels,
        layers_per_block=config.layers_per_block, dropout=config.dropout,
        # None makes each attention layer single-headed over all its channels (diffusers' convention).
        attention_head_dim=config.attn_head_dim,
        # GroupNorm(32) as in Ho et al.; smaller when the tiny test nets have fewer channels.
        norm_num_groups=math.gcd(32, *channels),
        num_train_timesteps=config.num_train_timesteps,
    )


def train_scheduler(config: DiffusionConfig):
    """The forward process q(x_t | x_0): diffusers' DDPMScheduler with the configured β schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                         beta_schedule=BETA_SCHEDULES[config.beta_schedule],
                         beta_start=config.beta_start, beta_end=config.beta_end,
                         prediction_type=config.prediction_type, clip_sample=config.clip_sample,
                         clip_sample_range=1.0)


def ddim_scheduler(config: DiffusionConfig, *, timestep_spacing: str | None = None,
                   set_alpha_to_one: bool | None = None):
    """A DDIMScheduler built from the training scheduler's config (same β, ᾱ, prediction type, clipping)."""
    from diffusers import DDIMScheduler

    spacing = timestep_spacing or config.timestep_spacing
    if spacing not in TIMESTEP_SPACINGS:
        raise DiffusionConfigError(f"timestep_spacing must be one of {', '.join(TIMESTEP_SPACINGS)}, got {spacing!r}")
    alpha_one = config.set_alpha_to_one if set_alpha_to_one is None else bool(set_alpha_to_one)
    return DDIMScheduler.from_config(train_scheduler(config).config, timestep_spacing=spacing,
                                     set_alpha_to_one=alpha_one, steps_offset=0)


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses: ε, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ via the scheduler's get_velocity."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise DiffusionConfigError(f"unsupported prediction type {kind!r}")


def diffusion_loss(model: nn.Module, scheduler, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample MSE of the simple objective (Ho et al. eq. 14) and the timesteps drawn.

    t ~ U{0..T-1} and ε ~ N(0, I) come from torch's global RNG on x0's device (so resume stays exact).
    The loss is computed in fp32 even under autocast.
    """
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    x_t = scheduler.add_noise(x0, noise, t)
    target = training_target(scheduler, x0, noise, t)
    pred = model(x_t, t)
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3)), t


# ---------------------------------------------------------------------------------------------------------------
# The exported root module
# ---------------------------------------------------------------------------------------------------------------

class DiffusionModel(nn.Module):
    """UNet denoiser + noise-schedule config; ``forward(x_t, t)`` is the raw UNet prediction (ε or v)."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.unet = build_unet(config)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t).sample

    def ddim_scheduler(self, **overrides):
        return ddim_scheduler(self.config, **overrides)

    def sampler_settings(self, steps: int | None = None, eta: float | None = None, *,
                         timestep_spacing: str | None = None, set_alpha_to_one: bool | None = None,
                         precision: str = "fp32") -> dict:
        """Everything that determines a DDIM sample set besides weights and seed: recorded beside every sample set."""
        s = self.ddim_scheduler(timestep_spacing=timestep_spacing, set_alpha_to_one=set_alpha_to_one)
        steps = self.config.sample_steps if steps is None else steps
        eta = self.config.eta if eta is None else eta
        return {"sampler": "ddim", "steps": int(steps), "eta": float(eta),
                "timestep_spacing": s.config.timestep_spacing,
                "set_alpha_to_one": bool(s.config.set_alpha_to_one), "clip_sample": bool(s.config.clip_sample),
                "steps_offset": int(s.config.steps_offset), "prediction_type": s.config.prediction_type,
                "beta_schedule": s.config.beta_schedule, "num_train_timesteps": int(s.config.num_train_timesteps),
                "precision": precision}

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None, steps: int | None = None,
               eta: float | None = None, batch_size: int = 256, timestep_spacing: str | None = None,
               set_alpha_to_one: bool | None = None, precision: str = "fp32",
               channels_last: bool = False) -> torch.Tensor:
        """DDIM samples, num×3×R×R in [-1, 1] on the module's device.

        ``steps``/``eta`` default to the config's (the values the model was trained and exported with).
        The starting noise x_T ~ N(0, I) (and, for eta > 0, the per-step noise) is drawn with ``generator`` on its
        own device (CPU when None, from the global CPU RNG), so the same seed gives the same images on CPU and GPU.
        Images are denoised ``batch_size`` at a time; with eta > 0 the per-step noise depends on that split.
        ``precision`` 'bf16'/'fp16' runs the UNet under autocast (the DDIM update stays fp32); ``channels_last``
        converts the UNet and inputs to NHWC (a speed option for GPUs; numerically neutral up to conv algorithms).
        """
        steps = self.config.sample_steps if steps is None else int(steps)
        eta = self.config.eta if eta is None else float(eta)
        if precision not in SAMPLE_PRECISIONS:
            raise DiffusionConfigError(f"precision must be one of {', '.join(SAMPLE_PRECISIONS)}, got {precision!r}")
        if not 0.0 <= eta <= 1.0:
            raise DiffusionConfigError(f"eta must be in [0, 1], got {eta}")
        if steps < 1 or steps > self.config.num_train_timesteps:
            raise DiffusionConfigError(f"steps must be in [1, {self.config.num_train_timesteps}], got {steps}")
        device = self.device
        noise_device = generator.device if generator is not None else torch.device("cpu")
        r = self.config.resolution
        x_T = torch.randn((num, 3, r, r), generator=generator, device=noise_device, dtype=torch.float32)
        scheduler = self.ddim_scheduler(timestep_spacing=timestep_spacing, set_alpha_to_one=set_alpha_to_one)
        scheduler.set_timesteps(steps)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        was_training = self.training
        self.eval()
        try:
            out = [self._ddim(chunk, scheduler, generator, noise_device, eta, SAMPLE_PRECISIONS[precision],
                              channels_last) for chunk in x_T.split(batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out).clamp_(-1.0, 1.0)

    def _ddim(self, x_T: torch.Tensor, scheduler, generator, noise_device, eta: float, amp_dtype, channels_last: bool):
        """One batch through the DDIM chain: our own loop over scheduler.step, with no host↔device syncs per step
        (the timesteps are copied to the device once; an int timestep would be a blocking copy every step)."""
        device = self.device
        x = _to_device(x_T, device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t_device = scheduler.timesteps.to(device)
        autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())
        for i, t in enumerate(scheduler.timesteps):   # t stays on the CPU: the scheduler indexes its tables with it
            with autocast:
                model_output = self.unet(x, t_device[i]).sample
            variance_noise = None
            if eta > 0:  # drawn in the same order as DDIMPipeline's scheduler.step(generator=...) would draw it
                variance_noise = _to_device(torch.randn(x.shape, generator=generator, device=noise_device,
                                                        dtype=torch.float32), device)
            x = scheduler.step(model_output.float(), t, x, eta=eta, variance_noise=variance_noise).prev_sample
        return x.contiguous()


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host→GPU copy that does not block the host (pinned staging); a no-op on the same device."""
    if x.device == device:
        return x
    if x.device.type == "cpu" and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def build_from_config(model_config: dict) -> DiffusionModel:
    """Registry entry (models.FAMILIES['ddpm']): rebuild the exported root module from its stored config."""
    return DiffusionModel(DiffusionConfig.from_dict(dict(model_config)))


# ---------------------------------------------------------------------------------------------------------------
# diffusers-format export
# ---------------------------------------------------------------------------------------------------------------

def export_diffusers(model: DiffusionModel, directory: str | os.PathLike) -> Path:
    """Write ``directory`` so that ``diffusers.DDIMPipeline.from_pretrained(directory)`` loads this model:
    unet/ (UNet2DModel.save_pretrained, safetensors), scheduler/ (the DDIM config) and model_index.json.

    Built in a temporary sibling folder and renamed, so an interrupted export never leaves a half-written directory.
    """
    from diffusers import DDIMPipeline

    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = DDIMPipeline(unet=model.unet, scheduler=model.ddim_scheduler())
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "facegen_ddpm.json").write_text(json.dumps(
        {"model_config": model.config.to_dict(), "sampler_defaults": model.sampler_settings()}, indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory
