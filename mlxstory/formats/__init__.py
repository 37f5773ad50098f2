"""File formats: RON (`ron`, the original's config and vocab files) and the model/train configs with their
named presets (`config`, `presets/*.ron`). Nothing here imports MLX."""
