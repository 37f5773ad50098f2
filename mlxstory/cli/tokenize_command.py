"""`mlxstory tokenize`: read a data source, train the tokenizer on its train split, write a token store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from mlxstory.cli.app import app


@contextmanager
def progress_bars() -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """`bar(description)` makes a `progress(done, total)` callback whose bar appears on its first call.

    One rich display on stderr for all bars (rich allows one live display at a time); silent when stderr is
    not a terminal, so logs and pipes stay clean.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as display:

        def bar(description: str) -> Callable[[int, int], None]:
            task: list = []

            def update(done: int, total: int) -> None:
                if not task:
                    task.append(display.add_task(description, total=total))
                display.update(task[0], completed=done, total=total)

            return update

        yield bar


@app.command("tokenize")
def tokenize(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            metavar="SOURCE",
            help="A .parquet (column `text`, else the first string column), .txt (stories split on "
            "<|endoftext|> or blank lines) or .jsonl (`text` field) file, a folder of .parquet files, "
            "a Hugging Face dataset `hf:OWNER/NAME[@REVISION][:PATTERN]`, `tinystories` (all of "
            "roneneldan/TinyStories), `tinystories-10k` or `demo` (the built-in generated corpus).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the token store.")],
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", metavar="N", help="Tokens in the vocabulary, specials included.")
    ] = 2048,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of the stories held out for validation.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/val split.")] = 1337,
    gptrs_out: Annotated[
        Path | None,
        typer.Option("--gptrs-out", metavar="FILE",
                     help="Also write tokenizer and stories in the original gpt-rs dataset RON format."),
    ] = None,
) -> None:
    """Train a BPE tokenizer on the train split of SOURCE and write the token store to DIR.

    Writes tokenizer.ron, tokens.bin, stories.npy and manifest.json; the split is by story, seeded.
    A gpt-rs dataset file (`.ron`) as SOURCE keeps its own tokenizer instead of training one.
    """
    from mlxstory.data.sources import SourceTexts, load_texts
    from mlxstory.data.token_store import TokenStore, build_token_store, check_val_fraction

    start = time.perf_counter()
    check_val_fraction(val_fraction)
    with progress_bars() as bar:
        if data.endswith(".ron"):
            from mlxstory.data.gptrs_dataset import read_gptrs_dataset

            dataset = read_gptrs_dataset(data)
            texts = [dataset.tokenizer.decode(story) for story in dataset.stories]
            source = SourceTexts(texts, data, f"gpt-rs dataset {data} ({len(texts):,} stories)")
            store = TokenStore.create(out, texts, dataset.tokenizer, source=source, val_fraction=val_fraction,
                                      seed=seed, progress=bar("encoding stories"))
        else:
            source = load_texts(data)
            store = build_token_store(
                out, source, vocab_size, val_fraction=val_fraction, seed=seed,
                on_train_progress=bar("training tokenizer (merges)"),
                on_encode_progress=bar("encoding stories"),
            )
    typer.echo(f"wrote {store.summary()} in {time.perf_counter() - start:.1f} s", err=True)
    if gptrs_out is not None:
        from mlxstory.data.gptrs_dataset import write_gptrs_dataset

        stories = store.tokenizer.encode_batch(source.texts, on_unknown="ignore")
        write_gptrs_dataset(gptrs_out, store.tokenizer, stories)
        typer.echo(f"wrote gpt-rs dataset {gptrs_out} ({len(stories):,} stories)", err=True)
