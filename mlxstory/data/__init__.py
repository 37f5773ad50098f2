"""Data: story sources (local files, hub datasets: hub.py) → BPE tokenizer → token store → training windows.

Nothing here imports MLX except `batches` (which hands windows to the model as arrays).
"""
