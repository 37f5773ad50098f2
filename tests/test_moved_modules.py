"""Module paths from before the stage folders still import: the same module object, with a warning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import mlxstory  # noqa: F401
from mlxstory._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_new_module_and_warns(old: str):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED[old]):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_the_readme_imports_of_the_old_layout_still_work_in_a_fresh_interpreter():
    code = ("from mlxstory.checkpoint import load_model; from mlxstory.train import TrainingControl, train; "
            "from mlxstory.run_dir import create_run; from mlxstory.model import GPT; "
            "import mlxstory.training.train as t; print(train is t.train)")
    out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
