"""mlxstory: train small story-writing transformers and their BPE tokenizers with MLX."""

from mlxstory import cpu_speedups

# Must run before any module imports mlx.core (see cpu_speedups for why).
cpu_speedups.apply()

__version__ = "0.1.0"

from mlxstory import _moved  # noqa: E402

_moved.install()
