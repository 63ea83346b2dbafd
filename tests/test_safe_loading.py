"""Safe loading: nothing executes code from a checkpoint, and runs write only under their directory.

* Static: no Python file of the repository unpickles except through ``torch.load(..., weights_only=True)``;
  no ``pickle``/``eval``/``exec``/``np.load(allow_pickle=True)``, and no object registered with Accelerate's
  ``register_for_checkpointing`` (Accelerate would load those with ``weights_only=False``).
* Behaviour: Accelerate 1.15's ``load_state`` reads every file with ``weights_only=True`` (observed on a real
  resume), and a checkpoint whose pickles carry a code payload is refused with one line, payload not run.
* Exports are safetensors + JSON: a family name is looked up in the registry, never imported by name.
* The trainers write nothing outside ``--out/<run>`` and the preprocessing cache: the uninterrupted reference
  runs (``references``, tests/conftest.py) run with a sandboxed working directory, HOME and TMPDIR.
"""
from __future__ import annotations

import ast
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from tests.runs import FAMILIES, ROOT, train_step

# The one deliberate exception: clean-fid's reference Inception network is distributed as TorchScript; its
# sha256 is recorded in every metrics.json and compared with clean-fid's published hash (utils/feature_nets.py).
ALLOWED = {("utils/feature_nets.py", "torch.jit.load")}
FORBIDDEN_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads", "joblib.load",
                   "marshal.loads", "shelve.open", "torch.jit.load", "eval", "exec", "register_for_checkpointing",
                   "yaml.load", "yaml.unsafe_load"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def repository_python_files() -> list[Path]:
    skip = {".git", "venv", ".venv", "node_modules", "__pycache__", "runs"}
    return sorted(p for p in ROOT.rglob("*.py") if not (set(p.relative_to(ROOT).parts) & skip))


def unsafe_calls(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        short = name.rsplit(".", 1)[-1]
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{rel}:{node.lineno} {name}"
        if name == "torch.load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where} without weights_only=True")
        elif (name in FORBIDDEN_CALLS or short == "register_for_checkpointing") and (rel, name) not in ALLOWED:
            found.append(where)
        elif short == "load" and name.endswith(("np.load", "numpy.load")):
            ap = kw.get("allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where} with allow_pickle")
    return found


def test_no_code_path_unpickles_untrusted_data():
    files = repository_python_files()
    assert len(files) > 30 and ROOT / "utils" / "checkpoint.py" in files
    problems = [p for f in files for p in unsafe_calls(f)]
    assert not problems, "\n".join(problems)


def test_the_scanner_catches_what_it_forbids(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, pickle, numpy as np\n"
                   "torch.load('a')\ntorch.load('a', weights_only=False)\npickle.loads(b'')\n"
                   "np.load('a', allow_pickle=True)\neval('1')\nacc.register_for_checkpointing(x)\n"
                   "torch.load('ok', weights_only=True)\nnp.load('ok')\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert len(unsafe_calls(bad)) == 6


# ------------------------------------------------------------------------------------------------ behaviour

class Payload:
    """Unpickling this creates a directory: evidence that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_accelerate_load_state_reads_everything_with_weights_only(tiny_run, monkeypatch):
    t = tiny_run
    train_step(t)
    t.ckpt.save({"step": 1, "extra": {}})
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    t.run.args.resume = "latest"
    assert t.ckpt.resume()["step"] == 1
    # optimizer.bin and random_states_0.pkl by Accelerate, random_states_0.pkl again by our RNG check
    assert len(seen) >= 3 and all(v is True for v in seen), seen


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("victim,message", [
    ("optimizer.bin", r"^error: cannot resume from .*: UnpicklingError: "),
    ("random_states_0.pkl", r"^error: cannot read random states .*random_states_0\.pkl: UnpicklingError"),
])
def test_a_checkpoint_carrying_code_is_refused_without_running_it(tiny_run, tmp_path, victim, message):
    t = tiny_run
    train_step(t)
    path = t.ckpt.save({"step": 1, "extra": {}})
    marker = tmp_path / "payload-ran"
    (path / victim).write_bytes(pickle.dumps(Payload(marker)))
    t.run.args.resume = "latest"
    with pytest.raises(SystemExit, match=message) as e:
        t.ckpt.resume()
    assert "\n" not in str(e.value.code) and not marker.exists()


def test_export_family_names_are_looked_up_never_imported(tmp_path):
    from safetensors.torch import save_file

    from utils.export import ExportError, load_export

    path = tmp_path / "evil.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"family": "os", "schema_version": "1",
                                                          "model_config": '{"__class__": "os.system"}'})
    with pytest.raises(ExportError, match="is a 'os' export; known families"):
        load_export(path)


# ------------------------------------------------------------------------------------------------ where runs write

def test_runs_write_only_under_their_directory_and_the_data_cache(references, shared_cache):
    runs = {family: references.get(family) for family in FAMILIES}
    assert not any(references.cwd.iterdir()), list(references.cwd.iterdir())          # nothing relative to cwd
    stray = [p for p in references.tmp.rglob("*") if p.is_file()]                    # (torch may make empty dirs)
    assert not stray, stray                                                            # no stray temp files
    home = sorted(p.relative_to(references.home).as_posix() for p in references.home.rglob("*") if p.is_file())
    assert all(p.startswith((".cache/matplotlib/", ".config/matplotlib/")) for p in home), home  # a font cache
    # The --out folder holds the run directories (and this test's logs), nothing else.
    assert {p.name for p in references.root.iterdir()} == {*runs, "logs", "sandbox"}
    for family, run in runs.items():
        top = {p.name for p in run.iterdir()}
        assert {"config.json", "export.safetensors", "checkpoints", "stats.jsonl"} <= top, (family, top)
    # The cache holds decoded data, split manifests and (under fid_stats/, from runs that compute FID against the
    # same held-out images, e.g. tests/test_resume.py's) reference feature statistics, nothing else.
    odd = sorted(str(p.relative_to(shared_cache)) for p in shared_cache.rglob("*") if p.is_file()
                 and p.suffix not in (".npy", ".json") and not (p.suffix == ".npz" and p.parent.name == "fid_stats"))
    assert not odd, odd
