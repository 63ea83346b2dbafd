"""The results-table row scripts (scripts/<row>.sh) read as data, so each row's flags are written once, in its
script: the benchmark presets (bench/train_throughput.py) and the mini study (utils/study.py) take a row's run
name and trainer flags from here instead of copying them, and compare.py places a run that stored no --row by the
row of the script that gives it its name."""
from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# Flags of the trainer call that name the run, where data comes from and where results go, not the method.
_PLACE_FLAGS = ("--data", "--name", "--out", "--row")


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


def _trainer_call(stem: str) -> list[str]:
    """The words of the script's `accelerate launch train_*.py` call after the trainer's file name."""
    text = script_path(stem).read_text().replace("\\\n", " ")
    line = next((ln for ln in text.splitlines() if re.match(r"\s*accelerate launch train_\w+\.py", ln)), None)
    if line is None:
        raise ValueError(f"scripts/{stem}.sh has no `accelerate launch train_*.py` line")
    return shlex.split(line.split(".py", 1)[1])


def _flag_value(stem: str, flag: str) -> str:
    words = _trainer_call(stem)
    if flag not in words[:-1]:
        raise ValueError(f"scripts/{stem}.sh passes no {flag} to its trainer")
    return words[words.index(flag) + 1]


def run_name(stem: str) -> str:
    """The run name the script gives its trainer (--name)."""
    return _flag_value(stem, "--name")


def row_id(stem: str) -> str:
    """The plan row the script gives its trainer (--row, e.g. '2.3'; utils/table_specs.PLAN_ROWS)."""
    return _flag_value(stem, "--row")


@lru_cache(maxsize=1)
def _rows_by_run_name() -> dict[str, str]:
    rows = {}
    for path in sorted(SCRIPTS.glob("*.sh")):
        try:
            rows[run_name(path.stem)] = row_id(path.stem)
        except ValueError:
            continue   # not a row script (quickstart, run_table, ...): names no run of a row
    return rows


def row_of_run_name(name: str) -> str | None:
    """The row of the script that names its run ``name`` exactly (None for any other name): how runs trained
    before the trainers stored --row in config.json find their row."""
    return _rows_by_run_name().get(name)


def trainer_flags(stem: str) -> list[str]:
    """The literal flags of the script's `accelerate launch train_*.py` call: its method, without the place
    flags (--data, --name, --out, --row) and without anything the shell fills in ($DATA, "$@", optional arrays)."""
    flags, skip = [], False
    for word in _trainer_call(stem):
        if skip:
            skip = False
        elif word in _PLACE_FLAGS:
            skip = True
        elif "$" not in word:
            flags.append(word)
        elif "@" not in word and flags and flags[-1].startswith("--"):
            flags.pop()   # a flag whose value the shell fills in (--resolution "$RESOLUTION"): not the method's
    return flags
