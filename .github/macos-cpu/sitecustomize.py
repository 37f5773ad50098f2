"""Put MLX on the CPU in every Python process of the macOS CI job (on PYTHONPATH there only).

GitHub's hosted macOS runners are VMs whose paravirtual GPU does not run MLX's Metal kernels reliably, so
the job tests mlxstory on the Apple-silicon CPU; Metal itself is only exercised on a real Mac. Subprocesses
(the CLI tests, the kill tests, mlx.launch ranks) inherit PYTHONPATH, so they start on the CPU too.
Importing mlx.core before mlxstory is harmless on macOS: mlxstory loads MKL only on Linux.
"""

import sys

if sys.platform == "darwin":
    try:
        import mlx.core as mx
    except ImportError:  # pip and other tools run in this job before MLX is installed
        pass
    else:
        mx.set_default_device(mx.cpu)
