"""Make MLX fast on Linux x86 CPUs before `mlx.core` is imported.

The Linux `mlx-cpu` wheel links the reference netlib BLAS (~4.5 GFLOP/s) and JIT-compiles fused
kernels without AVX2/FMA. Two process-wide fixes, both no-ops on macOS and on GPUs:

1. Load MKL's `libmkl_rt` with RTLD_GLOBAL *before* `import mlx.core`: its `cblas_sgemm` then
   wins symbol resolution (~250 GFLOP/s). Loading it after the import does nothing.
2. Put a `g++` wrapper that appends `JIT_FLAGS` first on PATH, with a private JIT cache
   (MLX caches kernels under $TMPDIR/mlx), so `mx.compile` emits vectorised code for this CPU.
   MLX caches kernels by name only, so the folder's name hashes the flags and the CPU's features.

Set MLXSTORY_CPU_SPEEDUPS=0 to disable both (for A/B measurements).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SpeedupReport:
    """What `apply()` did; shown by `mlxstory info`."""

    blas_library: str | None = None
    jit_wrapper: str | None = None
    jit_cache: str | None = None
    notes: list[str] = field(default_factory=list)


# -march=native: AVX-512 where the CPU has it (about 4% of a `seed` training step over AVX2 alone on
# a Zen CPU); -fno-math-errno and inlining let exp vectorise instead of calling a function per element.
# None of these changes a result: no -ffast-math.
JIT_FLAGS = "-march=native -fno-math-errno -fno-trapping-math -finline-limit=10000"

REPORT = SpeedupReport()
_applied = False


def _enabled() -> bool:
    return os.environ.get("MLXSTORY_CPU_SPEEDUPS", "1") not in ("0", "false", "no")


def _is_linux_x86() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _find_mkl() -> str | None:
    prefixes = {sys.prefix, sys.base_prefix, sysconfig.get_config_var("prefix") or sys.prefix}
    for prefix in prefixes:
        for candidate in sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*"))):
            return candidate
    return None


def _load_blas(report: SpeedupReport) -> None:
    if "mlx.core" in sys.modules:
        report.notes.append("mlx.core was imported before mlxstory: MKL not loaded (reference BLAS in use)")
        return
    path = os.environ.get("MLXSTORY_BLAS") or _find_mkl()
    if path is None:
        report.notes.append("no optimized BLAS found (pip install mkl): MLX uses the reference BLAS")
        return
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        report.notes.append(f"could not load {path}: {error}")
        return
    report.blas_library = path


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1]
    except OSError:
        pass
    return ""


def _real_compiler(cache_root: Path) -> str | None:
    """The first g++ on PATH that is not one of our wrappers: a child process inherits a wrapper on
    PATH, and a wrapper that found itself would exec itself forever."""
    root = cache_root.resolve()
    search = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).resolve().is_relative_to(root)
    )
    return shutil.which("g++", path=search)


def _install_jit_wrapper(report: SpeedupReport) -> None:
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlxstory"
    cpu_flags = _cpu_flags()
    real = _real_compiler(cache_root)
    if real is None or " avx2" not in cpu_flags or " fma" not in cpu_flags:
        return
    # One folder per (flags, compiler, CPU): a kernel compiled for another CPU or other flags is never reused.
    tag = hashlib.sha256(f"{JIT_FLAGS}|{real}|{cpu_flags}".encode()).hexdigest()[:12]
    wrapper_dir = cache_root / f"jit-{tag}" / "bin"
    jit_tmp = cache_root / f"jit-{tag}" / "tmp"
    try:
        wrapper_dir.mkdir(parents=True, exist_ok=True)
        jit_tmp.mkdir(parents=True, exist_ok=True)
        wrapper = wrapper_dir / "g++"
        script = f'#!/bin/sh\nexec "{real}" "$@" {JIT_FLAGS}\n'
        if not wrapper.exists() or wrapper.read_text() != script:
            staging = wrapper_dir / f".g++.{os.getpid()}"
            staging.write_text(script)
            staging.chmod(0o755)
            os.replace(staging, wrapper)
    except OSError as error:
        report.notes.append(f"JIT flag wrapper not installed: {error}")
        return
    # Pin Python's own temp dir first, so only MLX's JIT cache moves to the private folder.
    tempfile.tempdir = tempfile.gettempdir()
    path = [e for e in os.environ.get("PATH", "").split(os.pathsep)
            if e and not Path(e).resolve().is_relative_to(cache_root.resolve())]
    os.environ["PATH"] = os.pathsep.join([str(wrapper_dir), *path])
    os.environ["TMPDIR"] = str(jit_tmp)
    report.jit_wrapper = str(wrapper)
    report.jit_cache = str(jit_tmp)


def apply() -> SpeedupReport:
    """Idempotent; called by `mlxstory/__init__.py` so it runs before anything imports MLX."""
    global _applied
    if _applied:
        return REPORT
    _applied = True
    if not _enabled():
        REPORT.notes.append("disabled by MLXSTORY_CPU_SPEEDUPS=0")
        return REPORT
    if not _is_linux_x86():
        return REPORT
    _load_blas(REPORT)
    _install_jit_wrapper(REPORT)
    return REPORT
