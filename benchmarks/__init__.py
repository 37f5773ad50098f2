"""Benchmarks: mlxstory beside a PyTorch twin and HF tokenizers; ships as `mlxstory.benchmarks`."""
