"""argparse types shared by every command line: periods, bounded numbers, integer lists.

Each raises argparse.ArgumentTypeError with a one-line reason, which argparse prints with the flag's name.
"""
from __future__ import annotations

import argparse
import math


class Every:
    """A period given as steps ('500') or epochs ('25ep'); '0' disables it."""

    def __init__(self, text: str):
        text = str(text).strip().lower()
        self.text = text
        try:
            if text.endswith("ep"):
                self.value, self.unit = float(text[:-2]), "epoch"
            else:
                self.value, self.unit = float(text), "step"
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a step count like 500 or epochs like 25ep, got {text!r}")
        if self.value < 0 or not math.isfinite(self.value):
            raise argparse.ArgumentTypeError(f"period must be ≥ 0, got {text!r}")

    def steps(self, steps_per_epoch: int) -> int:
        if self.value == 0:
            return 0
        n = self.value * steps_per_epoch if self.unit == "epoch" else self.value
        return max(1, int(round(n)))

    def __repr__(self) -> str:
        return self.text


def positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def positive_float(text: str) -> float:
    v = float(text)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def nonneg_float(text: str) -> float:
    v = float(text)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a number ≥ 0, got {text}")
    return v


def seed_int(text: str) -> int:
    v = int(text)
    if not 0 <= v < 2 ** 31:  # numpy seeds must be < 2**32, and each process adds its rank
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**31), got {text}")
    return v


def unit_float(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {text}")
    return v


def int_list(text: str) -> list[int]:
    """Comma-separated integers, any sign ('0,3,7')."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_int_tuple(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers ('8,16')."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"values must be positive, got {text!r}")
    return values
