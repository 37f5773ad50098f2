"""`mlxstory info`, `--version` and `python -m mlxstory`: what a user checks first on a new machine."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from mlxstory import __version__
from mlxstory.cli import app


def test_info_json_names_the_device_and_blas_and_measures_sgemm() -> None:
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["mlxstory"] == __version__ and info["default_device"].startswith("Device(")
    assert info["sgemm_gflops"] > 0
    if sys.platform.startswith("linux"):
        # The optimized BLAS must be active: the reference one is ~60x slower and would show here.
        assert "mkl" in info["blas"]


def test_info_text_lists_one_fact_per_line_without_measuring() -> None:
    result = CliRunner().invoke(app, ["info", "--no-measure"])
    assert result.exit_code == 0
    assert "default_device:" in result.stdout and "sgemm_gflops" not in result.stdout


def test_version_and_module_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "mlxstory", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"mlxstory {__version__}"
