"""`mlxstory generate`: stream stories from a trained run to stdout.

stdout carries only the story text (prompt included), so `> story.txt` and pipes get clean text;
loading messages, statistics and warnings go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from mlxstory.cli.app import app
from mlxstory.errors import MlxstoryError

RunOption = Annotated[
    Path | None, typer.Option("--run", metavar="DIR", help="Run directory: uses its latest checkpoint.")
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option("--checkpoint", metavar="FILE",
                 help="One .safetensors checkpoint (its run's model.ron and tokenizer.ron are used)."),
]


def load_for_cli(run: Path | None, checkpoint: Path | None) -> Any:
    """The `LoadedModel` that --run or --checkpoint names (exactly one of them), reported on stderr."""
    from mlxstory.training.checkpoint import load_model

    if (run is None) == (checkpoint is None):
        raise MlxstoryError("give exactly one of --run DIR or --checkpoint FILE")
    path = run if run is not None else checkpoint
    if not path.exists():
        flag = "--run" if run is not None else "--checkpoint"
        raise MlxstoryError(f"{flag} {path} does not exist; pass the --out folder of `mlxstory train`")
    loaded = load_model(path)
    typer.echo(
        f"loaded {loaded.checkpoint_path} (step {loaded.step}, "
        f"{loaded.model.parameter_count():,} parameters, vocab {loaded.tokenizer.vocab_size})",
        err=True,
    )
    return loaded


def read_prompt(prompt: str | None) -> str:
    """PROMPT, or stdin when PROMPT is `-` or absent and stdin is a pipe (one trailing newline dropped)."""
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
        return text[:-1] if text.endswith("\n") else text
    return prompt or ""


@contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Library warnings (e.g. unknown prompt characters) as one `warning: ...` line each, no source lines."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        typer.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("generate")
def generate_command(
    prompt: Annotated[
        str | None,
        typer.Argument(metavar="PROMPT", help="Story opening. `-` (or nothing, with a pipe) reads it from "
                       "stdin; empty starts a story from scratch."),
    ] = None,
    run: RunOption = None,
    checkpoint: CheckpointOption = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Most tokens to generate per sample.")
    ] = 200,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy (argmax).")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample from the k likeliest tokens; 0 = off.")] = 0,
    top_p: Annotated[
        float, typer.Option("--top-p", help="Sample from the smallest set holding this probability; 1 = off.")
    ] = 1.0,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (sample i uses seed + i); default: a fresh one, printed.")
    ] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Stories to generate.")] = 1,
    stop: Annotated[bool, typer.Option("--stop/--no-stop", help="Stop a sample at <|endoftext|>.")] = True,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per sample (text, tokens, tokens_per_second, "
                     "finish_reason, ...) instead of streamed text."),
    ] = False,
) -> None:
    """Generate stories from a trained run, streamed token by token to stdout.

    stdout gets only the story text, prompt first; samples are separated by a blank line.

    Prompt characters the tokenizer has never seen become <|unk|>, with a warning on stderr.
    """
    from mlxstory.generation.generate import random_seed, stream_generate
    from mlxstory.generation.sampling import make_sampler

    if num_samples < 1:
        raise MlxstoryError(f"--num-samples must be at least 1, got {num_samples}")
    if max_tokens < 1:
        raise MlxstoryError(f"--max-tokens must be at least 1, got {max_tokens}")
    sampler = make_sampler(temperature, top_k, top_p)  # checks the settings before loading anything
    text = read_prompt(prompt)
    loaded = load_for_cli(run, checkpoint)
    if seed is None:
        seed = random_seed()
        typer.echo(f"seed {seed}", err=True)

    try:
        with warnings_to_stderr():
            for index in range(num_samples):
                if index and not as_json:
                    _write("\n")
                if not as_json:
                    _write(text)
                pieces: list[str] = []
                last = None
                for response in stream_generate(loaded.model, loaded.tokenizer, text, max_tokens=max_tokens,
                                                sampler=sampler, seed=seed + index, stop_at_eot=stop):
                    pieces.append(response.text)
                    if not as_json:
                        _write(response.text)
                    last = response
                story = text + "".join(pieces)
                if as_json:
                    _write(json.dumps({
                        "text": story, "tokens": last.generated_tokens, "prompt_tokens": last.prompt_tokens,
                        "tokens_per_second": round(last.tokens_per_second, 1),
                        "finish_reason": last.finish_reason, "seed": seed + index,
                    }) + "\n")
                else:
                    _write("\n")
                typer.echo(
                    f"[sample {index + 1}/{num_samples}: {last.generated_tokens} tokens, "
                    f"{last.tokens_per_second:.1f} tokens/s, finish: {last.finish_reason}]",
                    err=True,
                )
    except BrokenPipeError:
        # The reader (e.g. `head`) left: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
