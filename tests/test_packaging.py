"""tui/ and benchmarks/ live at the top of the repo but ship inside the package as mlxstory.tui and
mlxstory.benchmarks (pyproject's package-dir). Prove both an editable install and a built wheel import them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT = "import mlxstory.tui as t, mlxstory.benchmarks as b; print(t.__file__); print(b.__file__)"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wheel_build_command(source: Path, dist: Path) -> list[str]:
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)]
    setuptools = tuple(int(part) for part in version("setuptools").split(".")[:2])
    if setuptools >= (70, 1):
        # This venv's setuptools builds wheels on its own (no `wheel` package): offline and ~1 s.
        # Older ones get pyproject's build requirements in an isolated env, from the package index.
        command[4:4] = ["--no-isolation", "--skip-dependency-check"]
    return command


def test_editable_install_imports_tui_and_benchmarks_from_the_repo(tmp_path: Path) -> None:
    # From a folder outside the repo, so the import cannot come from the current directory.
    tui_file, bench_file = run([sys.executable, "-c", IMPORT], cwd=tmp_path).split()
    assert Path(tui_file) == REPO / "tui" / "__init__.py"
    assert Path(bench_file) == REPO / "benchmarks" / "__init__.py"


def test_built_wheel_ships_tui_benchmarks_and_presets(tmp_path: Path) -> None:
    # Build from a copy so setuptools' build/ and egg-info never land in the shared checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("mlxstory", "tui", "benchmarks"):
        shutil.copytree(REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "results"))
    dist = tmp_path / "dist"
    run(wheel_build_command(source, dist), cwd=tmp_path)
    (wheel,) = dist.glob("mlxstory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    stages = ("data", "model", "training", "generation", "formats")
    presets = ("formats/presets/seed.model.ron", "formats/presets/original.train.ron")
    for required in ("mlxstory/__init__.py", "mlxstory/formats/ron.py", "mlxstory/cli/__init__.py",
                     *(f"mlxstory/{stage}/__init__.py" for stage in stages),
                     *(f"mlxstory/{p}" for p in presets),
                     "mlxstory/tui/__init__.py", "mlxstory/benchmarks/__init__.py"):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(name.startswith(("tui/", "benchmarks/", "tests/")) for name in names)

    # Install the wheel alone into a folder and import from there; dependencies come from this venv.
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)], cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    tui_file, bench_file = run([sys.executable, "-c", IMPORT], cwd=tmp_path, env=env).split()
    assert Path(tui_file).is_relative_to(target) and Path(bench_file).is_relative_to(target)
    check = "from mlxstory.formats.config import load_preset; print(load_preset('seed')[0].vocab_size)"
    assert run([sys.executable, "-c", check], cwd=tmp_path, env=env).strip() == "2048"
