"""`mlxstory import-gptrs`: a model trained by the original gpt-rs becomes an mlxstory run directory."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from mlxstory.cli.app import app


@app.command("import-gptrs")
def import_gptrs_command(
    weights: Annotated[
        Path, typer.Argument(metavar="WEIGHTS", help="gpt-rs's .safetensors (e.g. training/.../final"
                             ".safetensors).")
    ],
    dataset: Annotated[
        Path, typer.Option("--dataset", metavar="DATASET.ron", help="The dataset RON the model was trained "
                           "on (made by gpt-rs's tokenize): its tokenizer, and its stories for eval and more "
                           "training.")
    ],
    config: Annotated[
        Path, typer.Option("--config", metavar="transformer_config.ron", help="gpt-rs's model config.")
    ],
    out: Annotated[
        Path, typer.Option("--out", metavar="RUN", help="The run directory to make (new or empty).")
    ],
    train_config: Annotated[
        Path | None, typer.Option("--train-config", metavar="train_config.ron",
                                  help="Train settings for continuing (gpt-rs's or mlxstory's); default: "
                                  "mlxstory's.")
    ] = None,
) -> None:
    """Import gpt-rs weights as a run that generate, eval, dashboard and train --resume accept.

    The logits over gpt-rs's vocabulary are exactly gpt-rs's. Its vocabulary has no <|endoftext|> or
    <|unk|>: mlxstory adds them after it (zero weights), and generation starts from the prompt alone and
    never samples them, until training continued here has learnt them.
    """
    from mlxstory.cli.train_command import next_commands
    from mlxstory.export.gptrs import import_gptrs

    imported = import_gptrs(weights, dataset, config, out, train_config=train_config)
    typer.echo(f"made run {imported.path} from {weights} ({imported.stories:,} stories in its token store)")
    for note in imported.notes:
        typer.echo(f"note: {note}")
    typer.echo(next_commands(imported.path), err=True)
    quoted = shlex.quote(str(imported.path))
    typer.echo(f"  mlxstory train --resume {quoted} --iterations N   # train it more", err=True)
