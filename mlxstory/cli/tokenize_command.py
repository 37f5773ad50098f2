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
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Counted(MofNCompleteColumn):
        """done/total, in MB for tasks that count bytes."""

        def render(self, task):  # noqa: ANN001, ANN201 (rich's signature)
            return DownloadColumn().render(task) if task.fields.get("bytes") else super().render(task)

    columns = (TextColumn("{task.description}"), BarColumn(), Counted(), TimeElapsedColumn(),
               TimeRemainingColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as display:

        def bar(description: str, unit: str = "") -> Callable[[int, int], None]:
            task: list = []

            def update(done: int, total: int) -> None:
                if not task:
                    task.append(display.add_task(f"{description}{f' ({unit})' if unit else ''}", total=total,
                                                 bytes=unit == "bytes"))
                display.update(task[0], completed=done, total=total)

            return update

        yield bar


def encoding_options(workers: int | None, tokenizer_sample: str | None) -> tuple[int, int | None]:
    """--workers (default: every physical core) and --tokenizer-sample, checked: train shares them."""
    from mlxstory.data.parallel import check_workers, physical_cores

    return (check_workers(workers) if workers is not None else physical_cores(),
            parse_bytes(tokenizer_sample))


def parse_bytes(text: str | None) -> int | None:
    """`--tokenizer-sample` sizes: a number of bytes, with an optional K, M or G (powers of 1000)."""
    if text is None:
        return None
    number, scale = text.strip().upper().removesuffix("B"), 1
    if number[-1:] in ("K", "M", "G"):
        number, scale = number[:-1], 1000 ** ("KMG".index(number[-1]) + 1)
    try:
        value = int(float(number) * scale)
    except ValueError:
        value = 0
    if value < 1:
        from mlxstory.errors import MlxstoryError

        raise MlxstoryError(f"--tokenizer-sample must be a size in bytes such as 200000000 or 200M, "
                            f"got {text!r}")
    return value


WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", metavar="N", show_default="all physical cores",
                 help="Processes that read and encode the stories (the store is the same for any N)."),
]
TokenizerSampleOption = Annotated[
    str | None,
    typer.Option("--tokenizer-sample", metavar="BYTES", show_default="all train text",
                 help="Train the tokenizer on about this much train text (e.g. 200M), drawn by the seed."),
]


@app.command("tokenize")
def tokenize(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            metavar="SOURCE",
            help="A .parquet (column `text`, else the first string column), .txt (stories split on "
            "<|endoftext|> or blank lines) or .jsonl (`text` field) file, a folder of such files (one kind, "
            "read in name order), a Hugging Face dataset `hf:OWNER/NAME[@REVISION][:PATTERN]`, `tinystories` "
            "(all of roneneldan/TinyStories), `tinystories-10k` or `demo` (the built-in generated corpus).",
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
    workers: WorkersOption = None,
    tokenizer_sample: TokenizerSampleOption = None,
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
    from mlxstory.data.sources import SourceTexts, open_source
    from mlxstory.data.token_store import TokenStore, build_token_store, check_val_fraction

    start = time.perf_counter()
    check_val_fraction(val_fraction)
    workers, sample = encoding_options(workers, tokenizer_sample)
    with progress_bars() as bar:
        if data.endswith(".ron"):
            from mlxstory.data.gptrs_dataset import read_gptrs_dataset

            dataset = read_gptrs_dataset(data)
            texts = [dataset.tokenizer.decode(story) for story in dataset.stories]
            source = SourceTexts(texts, data, f"gpt-rs dataset {data} ({len(texts):,} stories)")
            store = TokenStore.create(out, texts, dataset.tokenizer, source=source, val_fraction=val_fraction,
                                      seed=seed, progress=bar("encoding stories", source.unit),
                                      workers=workers)
        else:
            source = open_source(data)
            store = build_token_store(
                out, source, vocab_size, val_fraction=val_fraction, seed=seed, tokenizer_sample=sample,
                workers=workers, on_read_progress=bar("reading stories, counting words", source.unit),
                on_train_progress=bar("training tokenizer (merges)"),
                on_encode_progress=bar("encoding stories", source.unit),
            )
    typer.echo(f"wrote {store.summary()} in {time.perf_counter() - start:.1f} s", err=True)
    if gptrs_out is not None:
        from mlxstory.data.gptrs_dataset import write_gptrs_dataset

        stories = store.stories_in_source_order()
        write_gptrs_dataset(gptrs_out, store.tokenizer, stories)
        typer.echo(f"wrote gpt-rs dataset {gptrs_out} ({len(stories):,} stories)", err=True)
