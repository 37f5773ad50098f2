"""`mlxstory train`: make (or reopen) a run directory, then train it with the dashboard or console output."""

from __future__ import annotations

import shlex
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from mlxstory.cli.app import app
from mlxstory.cli.tokenize_command import TokenizerSampleOption, WorkersOption
from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import DEFAULT_PRESET, PRESETS

# The data a preset trains on without --data: big models need big data (the epochs warning says why).
PRESET_DATA = {"mac": "tinystories"}
DEFAULT_DATA = "tinystories-10k"
RESUME_CONFLICTS = ("--data", "--preset", "--config", "--train-config", "--out", "--batch-size", "--seed",
                    "--tokenizer-sample")


def next_commands(run: Path) -> str:
    quoted = shlex.quote(str(run))
    return "\n".join([
        "next:",
        f'  mlxstory generate --run {quoted} "Once upon a time"   # write a story',
        f"  mlxstory eval --run {quoted}                          # loss, perplexity, bits per byte",
        f"  mlxstory dashboard {quoted}                           # the curves and samples again",
    ])


def overrides(**values: Any) -> dict[str, Any]:
    """Train-config fields the user set on the command line (None = not given), checked here so an
    error names the flag rather than the config field it sets."""
    names = {"iterations": "training_iterations", "lr": "learning_rate", "batch_size": "contexts_per_batch",
             "eval_interval": "evaluation_interval", "seed": "seed"}
    given = {key: value for key, value in values.items() if value is not None}
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        if key == "lr" and not value > 0:  # also NaN
            raise MlxstoryError(f"{flag} must be a positive learning rate, got {value}; e.g. --lr 3e-3")
        if key in ("iterations", "batch_size", "eval_interval") and value < 1:
            raise MlxstoryError(f"{flag} must be at least 1, got {value}")
    return {names[key]: value for key, value in given.items()}


def choose_data(data: str | None, preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """`create_run` keyword for the data: a token store folder, or the texts of a source; without --data,
    the preset's default source (demo corpus with a warning when the hub has it neither cached nor online)."""
    from mlxstory.data import sources

    if data is None:
        return {"texts": sources.open_default_source(PRESET_DATA.get(preset, DEFAULT_DATA))}
    if Path(data).is_dir() and (Path(data) / "manifest.json").is_file():
        return {"store_dir": Path(data)}
    return {"texts": sources.open_source(data)}


def fit_memory(model_config: Any, train_settings: Any, budget: tuple[int, str]) -> Any:
    """The train config whose step fits the memory budget (same effective batch), said in one line."""
    from mlxstory.training.memory import fit

    fitted, plan = fit(model_config, train_settings, *budget)
    typer.echo(plan.describe(), err=True)
    return fitted


def prepare_new_run(
    *, data: str | None, preset: str, config: Path | None, train_config: Path | None, out: Path | None,
    fields: dict[str, Any], world_size: int = 1, workers: int | None = None,
    tokenizer_sample: str | None = None, budget: tuple[int, str],
) -> Path:
    from mlxstory.cli.tokenize_command import encoding_options, progress_bars
    from mlxstory.data.token_store import TokenStore
    from mlxstory.formats.config import ModelConfig, TrainConfig, load_config, load_preset
    from mlxstory.training.run_dir import check_new_run_path, create_run, default_run_path

    model_config, train_settings = load_preset(preset)
    if config is not None:
        model_config = load_config(ModelConfig, config)
    if train_config is not None:
        train_settings = load_config(TrainConfig, train_config)
    train_settings = replace(train_settings, **fields)
    train_settings.validate()
    out = out or default_run_path(preset)
    check_new_run_path(out)  # before reading any data: fail fast, overwrite nothing
    workers, sample = encoding_options(workers, tokenizer_sample)

    chosen = choose_data(data, preset)
    sized = model_config  # the model as it will train: a token store's vocab wins over the preset's
    if "store_dir" in chosen and (vocab := TokenStore.recorded_vocab_size(chosen["store_dir"])) is not None:
        sized = replace(model_config, vocab_size=vocab)
    train_settings = fit_memory(sized, train_settings, budget)  # after the data checks
    with progress_bars() as bar:
        unit = getattr(chosen.get("texts"), "unit", "")
        bars = {"read": bar("reading stories, counting words", unit),
                "merges": bar("training tokenizer (merges)"), "encode": bar("encoding stories", unit)}
        run = create_run(out, model_config=model_config, train_config=train_settings, preset=preset,
                         progress=lambda phase, done, total: bars[phase](done, total), world_size=world_size,
                         workers=workers, tokenizer_sample=sample, **chosen)
    return run.path


def reopen_run(resume: Path, fields: dict[str, Any]) -> Path:
    """Check a run being resumed and the --iterations / --lr / --eval-interval given for it; `train()`
    records them in its train.ron once the checkpoint has loaded."""
    from mlxstory.training.run_dir import open_run

    run = open_run(resume)
    replace(run.train_config, **fields).validate()
    return run.path


def train_with_console(run: Path, *, resume: bool, device: str | None, group: Any = None,
                       train_overrides: dict[str, Any] | None = None, trackers: Any = None) -> Any:
    """Console progress (rank 0 only: other ranks of a group are quiet); the first Ctrl-C finishes the
    step and saves, a second one aborts. Trackers get each event, and a sample at each eval."""
    from contextlib import nullcontext

    from mlxstory.training.console import ConsolePrinter
    from mlxstory.training.events import RunFinished, Warning
    from mlxstory.training.trackers import SampleWriter
    from mlxstory.training.train import TrainingControl, train

    if trackers and trackers.samples is None:
        trackers.samples = SampleWriter()  # the dashboard samples at each eval; here nothing else does

    control = TrainingControl()

    def on_interrupt(signum: int, frame: Any) -> None:
        if control.stop_requested:
            raise KeyboardInterrupt
        control.request_stop()
        if not quiet:
            typer.echo("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", err=True)

    quiet = group is not None and group.rank() != 0
    previous = signal.signal(signal.SIGINT, on_interrupt)
    finished = None
    try:
        with nullcontext() if quiet else ConsolePrinter() as printer:
            for event in train(run, resume=resume, control=control, device=device, group=group,
                               overrides=train_overrides):
                if printer is not None:
                    printer.handle(event)
                for message in trackers.handle(event) if trackers else []:
                    printer.handle(Warning(message, step=getattr(event, "step", None)))
                if isinstance(event, RunFinished):
                    finished = event
    finally:
        signal.signal(signal.SIGINT, previous)
    return finished


def train_with_dashboard(run: Path, *, resume: bool, device: str | None, group: Any = None,
                         train_overrides: dict[str, Any] | None = None, trackers: Any = None) -> Any:
    try:
        from mlxstory.tui.app import run_training_dashboard
    except ImportError as error:
        typer.echo(f"note: the dashboard is unavailable ({error}); showing console progress", err=True)
        return train_with_console(run, resume=resume, device=device, group=group,
                                  train_overrides=train_overrides, trackers=trackers)
    return run_training_dashboard(run, resume=resume, device=device, group=group, overrides=train_overrides,
                                  consumer=trackers or None)


def close_trackers(trackers: Any) -> None:
    """Finish the trackers' files; say where they are (and what went wrong) on stderr."""
    if not trackers:
        return
    notes, warnings = trackers.close()
    for message in warnings:
        typer.echo(f"warning: {message}", err=True)
    for note in notes:
        typer.echo(note, err=True)


@app.command("train")
def train_command(
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="SOURCE",
                     show_default="tinystories for --preset mac, else tinystories-10k; demo when offline",
                     help="A .parquet/.txt/.jsonl file, a parquet folder, a token store made by `mlxstory "
                     "tokenize`, a hub dataset `hf:OWNER/NAME[@REVISION][:PATTERN]`, `tinystories` (all of "
                     "roneneldan/TinyStories), `tinystories-10k` (named: fail offline unless cached) or "
                     "`demo` (built-in corpus)."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", show_default=DEFAULT_PRESET,
                     help=f"Model and training sizes: {', '.join(PRESETS)}."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="MODEL.RON", help="Model config; replaces the preset's."),
    ] = None,
    train_config: Annotated[
        Path | None,
        typer.Option("--train-config", metavar="TRAIN.RON", help="Training config; replaces the preset's."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", show_default="runs/<date>-<time>-<preset>",
                     help="New run directory (must not exist or be empty)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", metavar="RUN", help="Continue this run from its latest checkpoint."),
    ] = None,
    iterations: Annotated[
        int | None, typer.Option("--iterations", help="Training steps in total (overrides the config).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Peak learning rate (overrides the config).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Contexts per batch (overrides the config).")
    ] = None,
    eval_interval: Annotated[
        int | None, typer.Option("--eval-interval", help="Steps between evaluations and checkpoints.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for weights, batches and dropout.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", metavar="cpu|gpu", show_default="MLX's default device")
    ] = None,
    tui: Annotated[
        bool | None,
        typer.Option("--tui/--no-tui", show_default="--tui when stdout is a terminal",
                     help="Live dashboard, or plain progress on stderr."),
    ] = None,
    report_to: Annotated[
        str | None,
        typer.Option("--report-to", metavar="tensorboard,wandb",
                     help="Also log to TensorBoard (RUN/tensorboard) and/or Weights & Biases (RUN/wandb, "
                     "offline unless WANDB_MODE is set); comma-separated."),
    ] = None,
    workers: WorkersOption = None,
    tokenizer_sample: TokenizerSampleOption = None,
    max_memory: Annotated[
        float | None,
        typer.Option("--max-memory", metavar="GB", show_default="Metal's recommended working set; elsewhere "
                     "75% of memory",
                     help="Memory budget for a training step (GiB): a new run splits its batch into "
                     "micro-batches and/or recomputes blocks to fit, and MLX waits rather than exceed it."),
    ] = None,
) -> None:
    """Train a story model: tokenize the data into a new run directory, then train with live progress.

    Ctrl-C (or q in the dashboard) finishes the step, saves a checkpoint and exits; --resume RUN continues.
    """
    fields = overrides(iterations=iterations, lr=lr, batch_size=batch_size, eval_interval=eval_interval,
                       seed=seed)
    if device is not None and device not in ("cpu", "gpu"):
        raise MlxstoryError(f"--device must be cpu or gpu, got {device!r}")
    from mlxstory.training.memory import parse_budget
    from mlxstory.training.train import set_device

    set_device(device)  # first: the default budget is the training device's
    budget = parse_budget(max_memory)  # (bytes, where from); a bad --max-memory fails before any work
    tracker_names: list[str] = []
    if report_to is not None:
        from mlxstory.training.trackers import parse_tracker_names

        tracker_names = parse_tracker_names(report_to)  # before any data is read: fail fast
    if resume is not None:
        given = dict(zip(RESUME_CONFLICTS, (data, preset, config, train_config, out,
                                            batch_size, seed, tokenizer_sample), strict=True))
        clashing = [name for name, value in given.items() if value is not None]
        if clashing:
            raise MlxstoryError(f"{', '.join(clashing)} cannot be combined with --resume: a resumed run "
                                "keeps its data, model and batches; only --iterations, --lr, --eval-interval "
                                "and --device may change")
    from mlxstory.training.distributed import (
        init_group,
        peer_errors,
        prepared_by_rank0,
        rank_of,
        world_size_of,
    )

    group = init_group()  # None unless started by mlx.launch (or mpirun)
    with peer_errors(group, "nothing was trained yet; start the group again"):
        if resume is not None:
            run = prepared_by_rank0(lambda: reopen_run(resume, fields), group)
        else:
            run = prepared_by_rank0(lambda: prepare_new_run(
                data=data, preset=preset or DEFAULT_PRESET, config=config, train_config=train_config, out=out,
                fields=fields, world_size=world_size_of(group), workers=workers,
                tokenizer_sample=tokenizer_sample, budget=budget), group)
    # Past the budget MLX waits for work in flight to free memory instead of allocating ahead of it
    # (a resumed run keeps the micro-batches it was planned with; the limit still applies).
    import mlx.core as mx

    mx.set_memory_limit(budget[0])

    use_tui = rank_of(group) == 0 and (sys.stdout.isatty() if tui is None else tui)
    trainer = train_with_dashboard if use_tui else train_with_console
    trackers = None
    if tracker_names and rank_of(group) == 0:  # rank 0 reports for the group
        from mlxstory.training.trackers import open_trackers

        trackers = open_trackers(tracker_names, run)
    try:
        with peer_errors(group, f"the run keeps its last checkpoint; resume the group with --resume {run}"):
            finished = trainer(run, resume=resume is not None, device=device, group=group,
                               train_overrides=fields if resume is not None else None, trackers=trackers)
    finally:
        close_trackers(trackers)
    if rank_of(group) != 0:  # rank 0 reports for the group
        if finished is not None and finished.reason == "diverged":
            raise typer.Exit(1)
        return
    if finished is None:
        typer.echo(f"the run is in {run}; continue with: mlxstory train --resume {shlex.quote(str(run))}",
                   err=True)
        return
    if finished.reason == "diverged":
        raise typer.Exit(code=1)  # the console or the dashboard has said why, and where the last good one is
    if finished.reason == "completed":
        typer.echo(next_commands(run), err=True)
