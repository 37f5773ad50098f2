"""Old module paths (before the stage folders) keep importing, with a DeprecationWarning.

`import mlxstory.checkpoint` gives the very module `mlxstory.training.checkpoint` (one object under two names,
so patching either patches both). `mlxstory.model` needs no alias: the package re-exports the decoder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    **{f"mlxstory.{name}": f"mlxstory.data.{name}" for name in
       ("sources", "demo_corpus", "tokenizer", "token_store", "batches", "gptrs_dataset")},
    **{f"mlxstory.{name}": f"mlxstory.model.{name}" for name in ("folded_decoder", "fast_path")},
    **{f"mlxstory.{name}": f"mlxstory.training.{name}" for name in
       ("train", "optimizer", "checkpoint", "run_dir", "distributed", "events", "metrics_log", "console")},
    **{f"mlxstory.{name}": f"mlxstory.generation.{name}" for name in ("generate", "sampling", "evaluate")},
    **{f"mlxstory.{name}": f"mlxstory.formats.{name}" for name in ("ron", "config")},
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        # The module is the new one, already executed; the import system now also files it under the old name.
        pass


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
