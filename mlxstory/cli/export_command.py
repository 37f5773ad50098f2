"""`mlxstory export`: a run's model as a Hugging Face `transformers` folder or as gpt-rs's files."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mlxstory.cli.app import app
from mlxstory.errors import MlxstoryError


class ExportFormat(str, Enum):
    hf = "hf"
    gptrs = "gptrs"


def next_steps(format: ExportFormat, out: Path) -> str:
    if format is ExportFormat.hf:
        return "\n".join([
            "load it with transformers:",
            "  from transformers import pipeline",
            f"  generate = pipeline('text-generation', model={str(out)!r})",
            "  print(generate('Once upon a time', max_new_tokens=40)[0]['generated_text'])",
        ])
    folder = shlex.quote(str(out))
    return "\n".join([
        "generate with gpt-rs (in its repository):",
        f"  cargo run --release -- generate --dataset-file {folder}/dataset.ron "
        f"--transformer-config-file {folder}/transformer_config.ron "
        f"--transformer-safetensors {folder}/transformer.safetensors --input 'Once' --token-count 64",
    ])


@app.command("export")
def export_command(
    source: Annotated[
        Path, typer.Argument(metavar="RUN|CHECKPOINT", help="A run directory (its latest checkpoint) or one "
                             ".safetensors checkpoint of a run.")
    ],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="A new or empty folder to write.")],
    format: Annotated[
        ExportFormat,
        typer.Option("--format", help="hf: a Hugging Face transformers GPT-2 folder with tokenizer.json; "
                     "gptrs: the weights, transformer_config.ron and dataset RON that gpt-rs reads."),
    ] = ExportFormat.hf,
    with_stories: Annotated[
        bool, typer.Option("--with-stories", help="gptrs: put the run's tokenized stories in the dataset RON "
                           "(without them it holds only the tokenizer).")
    ] = False,
) -> None:
    """Export a trained model to Hugging Face transformers (--format hf) or to gpt-rs (--format gptrs).

    Nothing is written unless every file can be: OUT appears whole or not at all.
    """
    if not source.exists():
        raise MlxstoryError(f"{source} does not exist; pass a run directory or a .safetensors checkpoint")
    if with_stories and format is not ExportFormat.gptrs:
        raise MlxstoryError("--with-stories is for --format gptrs (a transformers folder holds no data)")
    if format is ExportFormat.hf:
        from mlxstory.export.hf import export_hf

        files = export_hf(source, out)
    else:
        from mlxstory.export.gptrs import export_gptrs

        files = export_gptrs(source, out, with_stories=with_stories)
    typer.echo(f"wrote {out}: " + ", ".join(path.name for path in files))
    typer.echo(next_steps(format, out), err=True)
