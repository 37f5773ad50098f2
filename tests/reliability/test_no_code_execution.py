"""Nothing executes from files: a pickle payload that would create a marker file when unpickled is put
wherever a run keeps arrays (weights, optimizer state, the stories table) and into the RON configs; every
command refuses it with one `error:` line, and the marker never appears. A source scan backs this up: the
shipped code never imports a pickle-style loader, calls eval/exec, or allows pickles in numpy.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlxstory.training.checkpoint import read_latest

from .faults import assert_one_error_line, cli, fault

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [REPO / "mlxstory", REPO / "tui", REPO / "benchmarks"]
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}


class Plant:
    """Unpickling this calls open(marker, "w"): the marker file's existence means code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def payload(marker: Path) -> bytes:
    return pickle.dumps({"weights": Plant(marker)})


def pickled_npy(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([Plant(marker), 1], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def test_the_payloads_are_armed(tmp_path: Path):
    """Loaded the unsafe way, each payload does create its marker: so the tests below can fail."""
    pickle.loads(payload(tmp_path / "a"))
    np.load(io.BytesIO(pickled_npy(tmp_path / "b")), allow_pickle=True)
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


def into_weights(run: Path, marker: Path) -> None:
    (run / "checkpoints" / read_latest(run)["weights"]).write_bytes(payload(marker))


def into_optimizer(run: Path, marker: Path) -> None:
    (run / "checkpoints" / read_latest(run)["optimizer"]).write_bytes(payload(marker))


def loose_checkpoint(run: Path, marker: Path) -> None:
    (run / "checkpoints" / "downloaded.safetensors").write_bytes(payload(marker))


def into_stories_table(run: Path, marker: Path) -> None:
    """A pickled object array as stories.npy, with the manifest's checksum updated to match (as an
    attacker who ships the whole store would)."""
    data = pickled_npy(marker)
    (run / "data" / "stories.npy").write_bytes(data)
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    manifest["stories_sha256"] = hashlib.sha256(data).hexdigest()
    (run / "data" / "manifest.json").write_text(json.dumps(manifest))


def into_model_ron(run: Path, marker: Path) -> None:
    (run / "model.ron").write_text(f'(vocab_size: __import__("builtins").open("{marker}", "w"))\n')


def into_tokenizer_ron(run: Path, marker: Path) -> None:
    (run / "tokenizer.ron").write_text(f'!!python/object/apply:builtins.open ["{marker}", "w"]\n')


GENERATE = ["generate", "--max-tokens", "2", "--seed", "1", "--run"]
CHECKPOINT = ["generate", "--max-tokens", "2", "--seed", "1", "--checkpoint"]
EVAL = ["eval", "--run"]
RESUME = ["train", "--no-tui", "--resume"]
CASES: list[tuple[str, Callable[[Path, Path], None], list[list[str]], str]] = [
    ("pickle as weights", into_weights, [GENERATE, EVAL, RESUME], "is not a readable safetensors file"),
    ("pickle as optimizer state", into_optimizer, [RESUME], "is not a readable safetensors file"),
    ("pickle as a loose .safetensors", loose_checkpoint, [CHECKPOINT], "is not a readable safetensors file"),
    ("pickled stories.npy", into_stories_table, [EVAL, RESUME], "stories.npy is unreadable"),
    ("code in model.ron", into_model_ron, [GENERATE, EVAL, RESUME], "model.ron"),
    ("YAML-style tag in tokenizer.ron", into_tokenizer_ron, [GENERATE, EVAL, RESUME], "tokenizer.ron"),
]


@pytest.mark.parametrize(("name", "plant", "commands", "expected"), CASES, ids=[case[0] for case in CASES])
def test_a_payload_in_a_run_is_refused_and_never_runs(tiny_trained_run: Path, tmp_path: Path, name: str,
                                                      plant: Callable[[Path, Path], None],
                                                      commands: list[list[str]], expected: str):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    marker = tmp_path / "pwned"
    plant(run, marker)
    for command in commands:
        target = run / "checkpoints" / "downloaded.safetensors" if command is CHECKPOINT else run
        with fault(f"code payload via {command[0]}"):
            assert_one_error_line(cli(*command, str(target), *(["Once"] if command[0] == "generate" else [])),
                                  expected)
            assert not marker.exists(), f"{name}: loading ran the payload"


def unsafe_uses(source: str, name: str) -> list[str]:
    """Imports of pickle-style modules, builtin eval/exec calls, allow_pickle=True, torch.load."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in ("eval", "exec"):
                found.append(f"{where} {function.id}()")
            if (isinstance(function, ast.Attribute) and function.attr == "load"
                    and isinstance(function.value, ast.Name) and function.value.id == "torch"):
                found.append(f"{where} torch.load()")
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    found.append(f"{where} allow_pickle={ast.unparse(keyword.value)}")
    return found


def test_shipped_code_has_no_unpickling_or_eval():
    files = [p for folder in SHIPPED for p in sorted(folder.rglob("*.py"))]
    assert len(files) > 20
    assert [use for p in files for use in unsafe_uses(p.read_text(), str(p.relative_to(REPO)))] == []


def test_the_scan_would_notice():
    source = """
import pickle, json
from dill import loads
import numpy as np
np.load("x.npy", allow_pickle=True)
np.load("y.npy", allow_pickle=flag)
np.load("z.npy", allow_pickle=False)
model.eval()
eval(text)
torch.load("w.pt")
"""
    assert [use.split(" ", 1)[1] for use in unsafe_uses(source, "bad.py")] == [
        "import pickle", "from dill import", "allow_pickle=True", "allow_pickle=flag", "eval()",
        "torch.load()",
    ]
