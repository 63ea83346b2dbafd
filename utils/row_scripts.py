"""The results-table row scripts (scripts/<row>.sh) read as data, so each row's flags are written once, in its
script: the benchmark presets (bench/train_throughput.py) and the mini study (utils/study.py) take a row's run
name and trainer flags from here instead of copying them."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# Flags of the trainer call that name where data comes from and results go, not the method.
_PLACE_FLAGS = ("--data", "--name", "--out")


def script_path(stem: str) -> Path:
    path = SCRIPTS / f"{stem}.sh"
    if not path.is_file():
        raise FileNotFoundError(f"no row script {path}")
    return path


def row_script(family: str, row: str) -> str:
    """The stem of the one script of a plan row, e.g. ('gan', '2.3') -> 'gan_2.3_wgan-gp-sn-attn'."""
    found = sorted(p.stem for p in SCRIPTS.glob(f"{family}_{row}_*.sh"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one scripts/{family}_{row}_*.sh, found {found or 'none'}")
    return found[0]


def run_name(stem: str) -> str:
    """The run name the script gives its trainer (--name)."""
    m = re.search(r"--name\s+(\S+)", script_path(stem).read_text())
    if not m:
        raise ValueError(f"scripts/{stem}.sh passes no --name")
    return m.group(1)


def trainer_flags(stem: str) -> list[str]:
    """The literal flags of the script's `accelerate launch train_*.py` call: its method, without the place
    flags (--data, --name, --out) and without anything the shell fills in ($DATA, "$@", optional arrays)."""
    text = script_path(stem).read_text().replace("\\\n", " ")
    line = next((ln for ln in text.splitlines() if re.match(r"\s*accelerate launch train_\w+\.py", ln)), None)
    if line is None:
        raise ValueError(f"scripts/{stem}.sh has no `accelerate launch train_*.py` line")
    flags, skip = [], False
    for word in shlex.split(line.split(".py", 1)[1]):
        if skip:
            skip = False
        elif word in _PLACE_FLAGS:
            skip = True
        elif "$" not in word:
            flags.append(word)
        elif "@" not in word and flags and flags[-1].startswith("--"):
            flags.pop()   # a flag whose value the shell fills in (--resolution "$RESOLUTION"): not the method's
    return flags
