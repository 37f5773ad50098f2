"""`mlxstory eval`: loss, perplexity and bits per byte of a run on held-out text."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from mlxstory.cli.app import app
from mlxstory.cli.generate_command import CheckpointOption, RunOption, load_for_cli, warnings_to_stderr
from mlxstory.errors import MlxstoryError


def same_tokenizer(a: Any, b: Any) -> bool:
    return (a.alphabet, a.merges, a.special_tokens) == (b.alphabet, b.merges, b.special_tokens)


def evaluation_data(loaded: Any, source: Any, max_tokens: int | None = None) -> tuple[Any, int, str]:
    """(tokens, bytes, description): every story of `source` (SourceTexts), else the run's val split;
    only the first `max_tokens` tokens of either when given."""
    from mlxstory.generation.evaluate import encode_texts, token_prefix

    if source is not None:
        tokens, byte_count = encode_texts(source.texts, loaded.tokenizer, max_tokens=max_tokens)
        what = f"{source.name} ({len(source.texts):,} stories)"
        return tokens, byte_count, (f"the first {len(tokens):,} tokens of {what}"
                                    if max_tokens is not None and len(tokens) == max_tokens else what)

    from mlxstory.data.token_store import TokenStore
    from mlxstory.training.run_dir import open_run

    run = open_run(loaded.run_dir)
    store = TokenStore.open(run.data_path)
    if not same_tokenizer(store.tokenizer, loaded.tokenizer):
        raise MlxstoryError(f"the token store {run.data_path} was made with another tokenizer than "
                            f"{loaded.run_dir}; evaluate on raw text with --data SOURCE")
    split = store.split_tokens("val")
    tokens, byte_count = token_prefix(split, store.split_bytes("val"), loaded.tokenizer, max_tokens)
    what = f"validation split of {run.data_path} ({store.split_story_count('val'):,} stories)"
    if len(tokens) < len(split):
        what = f"the first {len(tokens):,} of {len(split):,} tokens of the {what}"
    return tokens, byte_count, what


@app.command("eval")
def eval_command(
    run: RunOption = None,
    checkpoint: CheckpointOption = None,
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="SOURCE",
                     help="Evaluate on every story of this .parquet/.txt/.jsonl (or any `--data` source of "
                     "train) instead of the run's validation split."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 32,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", metavar="N", show_default="all",
                     help="Score only the first N tokens of the split (or of --data): a deterministic "
                     "prefix, for a quick, comparable number on a large split."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Mean loss, perplexity and bits per byte over all non-overlapping windows of held-out text.

    Every token is scored once (a shorter last window takes the tail); the result is deterministic.
    --max-tokens N scores the first N tokens only: the same prefix every time, so runs still compare.

    Bits per byte = total loss / UTF-8 bytes of the text, so runs with other vocabularies compare.
    """
    from mlxstory.cli.tokenize_command import progress_bars
    from mlxstory.data.sources import load_texts
    from mlxstory.generation.evaluate import evaluate

    if max_tokens is not None and max_tokens < 1:
        raise MlxstoryError(f"--max-tokens must be at least 1, got {max_tokens}")
    source = load_texts(data) if data is not None else None  # a bad --data fails before loading a model
    loaded = load_for_cli(run, checkpoint)
    with warnings_to_stderr():  # e.g. characters of --data the tokenizer has never seen
        tokens, byte_count, description = evaluation_data(loaded, source, max_tokens)
    typer.echo(f"evaluating on {description}: {len(tokens):,} tokens, {byte_count:,} bytes", err=True)
    start = time.perf_counter()
    with progress_bars() as bar:
        result = evaluate(loaded.model, tokens, byte_count, batch_size=batch_size,
                          start_token=loaded.tokenizer.eot_id, progress=bar("evaluating (windows)"))
    seconds = time.perf_counter() - start
    if as_json:
        typer.echo(json.dumps({
            **result.to_dict(), "step": loaded.step, "checkpoint": str(loaded.checkpoint_path),
            "data": description, "seconds": round(seconds, 2),
        }))
        return
    typer.echo(f"loss           {result.loss:.4f}  (nats per token)")
    typer.echo(f"perplexity     {result.perplexity:.3f}")
    typer.echo(f"bits_per_byte  {result.bits_per_byte:.4f}")
    typer.echo(f"tokens         {result.tokens:,}")
    typer.echo(f"bytes          {result.bytes:,}")
    typer.echo(f"evaluated step {loaded.step} in {seconds:.1f} s", err=True)
