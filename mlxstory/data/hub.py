"""Hugging Face hub datasets by id: `hf:OWNER/NAME[@REVISION][:PATTERN[,PATTERN...]]`, and two names.

`tinystories` is roneneldan/TinyStories in full: its `TinyStories-train.txt` (~1.9 GB, ~2.1M stories
separated by `<|endoftext|>`: the paper's train text; the repo's other big files are the GPT-4-only V2
text, the same stories as parquet, and an archive of the generation metadata). `tinystories-10k` is
flpelerin/tinystories-10k's parquet.

`resolve` turns a source into local files inside the Hugging Face cache: huggingface_hub downloads what is
missing (with its progress bars), or, when the hub cannot be reached, the cached copy is read. The readers in
sources.py then read those files like any others. `download` is the only function of the package that may
touch the network; tests fake it, or run it offline over a folder laid out as the cache.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlxstory.errors import DataError

HUB_PREFIX = "hf:"
# Readable files, in order of preference when a dataset is named without a pattern.
DATA_SUFFIXES = (".parquet", ".jsonl", ".txt")
ID_FORMAT = "hf:OWNER/NAME[@REVISION][:PATTERN]"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRAIN = re.compile(r"(?<![a-z])train", re.IGNORECASE)  # "train", "TinyStories-train", not "pretrained"


@dataclass(frozen=True)
class HubDataset:
    """A dataset repo at a revision (None: the default branch), and the glob patterns of the files to read
    (empty: the train split's files of one format, chosen by `choose_files`)."""

    repo_id: str
    revision: str | None = None
    patterns: tuple[str, ...] = ()
    name: str = ""  # how the user named it: `tinystories`, or the hf: id as given

    @property
    def label(self) -> str:
        return self.name or HUB_PREFIX + self.repo_id


NAMED_DATASETS = {
    "tinystories": HubDataset("roneneldan/TinyStories", patterns=("TinyStories-train.txt",),
                              name="tinystories"),
    "tinystories-10k": HubDataset("flpelerin/tinystories-10k", patterns=("*.parquet",),
                                  name="tinystories-10k"),
}


@dataclass(frozen=True)
class HubFiles:
    """The local files of a dataset, in reading order, and the snapshot (commit) folder they are in."""

    dataset: HubDataset
    files: list[Path]
    snapshot: Path

    @property
    def commit(self) -> str:
        return self.snapshot.name

    def describe(self, stories: int) -> str:
        """One line for run.json and the token store: what was read, from which commit, where it lies."""
        names = ", ".join(f.relative_to(self.snapshot).as_posix() for f in self.files[:3])
        more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        return (f"{self.dataset.label}: {stories:,} stories from the Hugging Face dataset "
                f"{self.dataset.repo_id} at {self.commit[:12]} ({names}{more}; cached at {self.snapshot})")


class HubUnavailableError(DataError):
    """The dataset is neither cached nor downloadable; the default source falls back to the demo corpus."""

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause  # the hub exception's class name, e.g. "LocalEntryNotFoundError"


def parse(source: str) -> HubDataset | None:
    """The hub dataset `source` names, or None when it names none (a path, `demo`)."""
    if source in NAMED_DATASETS:
        return NAMED_DATASETS[source]
    if not source.startswith(HUB_PREFIX):
        return None
    spec = source[len(HUB_PREFIX):]
    repo_part, _, pattern_part = spec.partition(":")
    repo_id, _, revision = repo_part.partition("@")
    patterns = tuple(p.strip() for p in pattern_part.split(",") if p.strip())
    empty = ("@" in repo_part and not revision) or (":" in spec and not patterns)
    if empty or not _REPO_ID.fullmatch(repo_id):
        raise DataError(f"--data {source}: expected {ID_FORMAT}, e.g. hf:roneneldan/TinyStories or "
                        "hf:roneneldan/TinyStories:TinyStories-valid.txt")
    return HubDataset(repo_id, revision or None, patterns, name=source)


def choose_files(paths: list[str], dataset: HubDataset) -> list[str]:
    """The repo files (posix paths relative to the repo) to read, sorted: those matching the dataset's
    patterns; without patterns, the files with `train` in their name if any, in the first format of
    DATA_SUFFIXES they come in (so a repo with both parquet shards and a .txt export is read once)."""
    from huggingface_hub.utils import filter_repo_objects

    readable = sorted(p for p in paths if p.lower().endswith(DATA_SUFFIXES))
    if dataset.patterns:
        return list(filter_repo_objects(readable, allow_patterns=list(dataset.patterns)))
    train = [p for p in readable if _TRAIN.search(PurePosixPath(p).name)]
    pool = train or readable
    for suffix in DATA_SUFFIXES:
        chosen = [p for p in pool if p.lower().endswith(suffix)]
        if chosen:
            return chosen
    return []


def resolve(source: str | HubDataset) -> HubFiles:
    """Local files of a hub dataset (downloading what is missing); errors are one line naming --data."""
    dataset = parse(source) if isinstance(source, str) else source
    if dataset is None:
        raise ValueError(f"{source!r} names no hub dataset")
    try:
        found = download(dataset)
    except DataError:
        raise
    except _not_found_errors() as error:
        raise DataError(_not_found_message(dataset, error)) from None
    except _hub_errors() as error:
        cause = type(error).__name__
        raise HubUnavailableError(
            f"cannot download {dataset.label} from the Hugging Face hub and no complete copy is cached "
            f"(offline? {cause}): connect once to download it, or pass --data PATH to a local "
            "parquet/txt/jsonl file, or --data demo",
            cause=cause,
        ) from None
    return found


def download(dataset: HubDataset) -> HubFiles:
    """The dataset's files in the HF cache, downloading those missing; the package's network boundary.

    Online, the repo's file list decides which files are read, and huggingface_hub downloads the missing
    ones (with its progress bars). Offline, the same choice is made among the files of the cached
    snapshot; with patterns, huggingface_hub also refuses a snapshot it knows to be incomplete. Raises the
    hub's own exceptions; `resolve` translates them.
    """
    from huggingface_hub import HfApi, snapshot_download

    where = {"repo_id": dataset.repo_id, "repo_type": "dataset", "revision": dataset.revision}
    try:
        listed = HfApi().list_repo_files(dataset.repo_id, repo_type="dataset", revision=dataset.revision)
    except _not_found_errors():
        raise
    except _offline_errors():
        # Without patterns nothing is checked: which files a complete copy holds is unknown offline.
        patterns = list(dataset.patterns)
        snapshot = Path(snapshot_download(local_files_only=True, allow_patterns=patterns, **where))
        present = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        chosen = choose_files(present, dataset)
        if not chosen:  # a snapshot folder without the data: as good as no cache
            raise
        return HubFiles(dataset, [snapshot / name for name in chosen], snapshot)
    chosen = choose_files(listed, dataset)
    if not chosen:
        wanted = f"matching {','.join(dataset.patterns)}" if dataset.patterns else "at all"
        raise DataError(f"--data {dataset.label}: the dataset {dataset.repo_id} has no "
                        f"{'/'.join(DATA_SUFFIXES)} files {wanted}; name the files to read with {ID_FORMAT}")
    snapshot = Path(snapshot_download(allow_patterns=[glob.escape(name) for name in chosen], **where))
    return HubFiles(dataset, [snapshot / name for name in chosen], snapshot)


def _offline_errors() -> tuple[type[BaseException], ...]:
    """What listing a repo raises when the hub cannot be reached (not: when the repo does not exist)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    # httpx.Timeout is a settings class, not an error: `_http_errors` keeps exception classes only.
    return (OfflineModeIsEnabled, OSError, *_http_errors("TransportError", "ConnectionError", "Timeout"))


def _http_errors(*attributes: str) -> list[type[BaseException]]:
    """The named exception classes of whichever HTTP clients huggingface_hub may be built on."""
    found: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for attribute in attributes:
            candidate = getattr(module, attribute, None)
            if isinstance(candidate, type) and issubclass(candidate, BaseException):
                found.append(candidate)
    return found


def _not_found_errors() -> tuple[type[BaseException], ...]:
    """The hub answered: no such repo (or no access to it), or no such revision; the cache cannot help."""
    from huggingface_hub import errors

    return tuple(getattr(errors, name) for name in ("RepositoryNotFoundError", "RevisionNotFoundError",
                                                   "GatedRepoError") if hasattr(errors, name))


def _not_found_message(dataset: HubDataset, error: BaseException) -> str:
    cause = type(error).__name__
    if cause == "RevisionNotFoundError":
        return (f"--data {dataset.label}: the dataset {dataset.repo_id} has no revision "
                f"{dataset.revision!r} ({cause}); give a branch, tag or commit that exists")
    if cause == "GatedRepoError":
        return (f"--data {dataset.label}: the dataset {dataset.repo_id} is gated ({cause}); accept its terms "
                "on huggingface.co and log in with `hf auth login`")
    return (f"--data {dataset.label}: no dataset {dataset.repo_id} on the Hugging Face hub, or it is private "
            f"({cause}); check OWNER/NAME (expected {ID_FORMAT})")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the hub or its cache could not give us the dataset", across hub versions
    (older huggingface_hub raises requests' errors, newer ones httpx's, which are not OSErrors)."""
    from huggingface_hub import errors

    return (OSError, errors.HfHubHTTPError, errors.EntryNotFoundError,
            *_http_errors("HTTPError", "RequestException"))
