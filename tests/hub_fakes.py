"""The Hugging Face hub faked at its boundary, for tests: a cache folder laid out as huggingface_hub lays
it out (`datasets--OWNER--NAME/{refs,snapshots}`), and an "online" hub whose repos are dicts of local files.

Only listing a repo and downloading into the cache are faked; huggingface_hub's own cache lookups (offline,
`local_files_only`) and all reading code run for real on the files.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects

REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download


def use_offline_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """The real huggingface_hub, offline, over `cache`: no request leaves the machine."""
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_snapshot(cache: Path, repo_id: str, files: dict[str, Path], *, commit: str = "a9c8b52",
                   ref: str | None = "main") -> Path:
    """Put `files` (repo path -> local file) into the cached snapshot of `repo_id` at `commit`, as links
    (the cache links snapshot files to blobs the same way), and point `refs/<ref>` at it."""
    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).unlink(missing_ok=True)
        (snapshot / name).symlink_to(source.resolve())
    if ref is not None:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def not_found(repo_id: str) -> RepositoryNotFoundError:
    response_type = sys.modules[HfHubHTTPError.__init__.__module__].__dict__.get("Response")
    if response_type is not None and hasattr(response_type, "request"):  # httpx / httpx2
        request_type = sys.modules[response_type.__module__.split(".")[0]].Request
        response = response_type(404, request=request_type("GET", f"https://huggingface.co/{repo_id}"))
    else:  # requests
        response = response_type()
        response.status_code = 404
    return RepositoryNotFoundError(f"404 Client Error: repository {repo_id} not found", response=response)


class FakeHub:
    """An online hub serving `repos` (repo id -> {repo path: local file}) into the cache at `cache`.

    `downloads` records each download's (repo_id, revision, allow_patterns)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cache: Path, repos: dict[str, dict[str, Path]]):
        self.cache = cache
        self.repos = repos
        self.downloads: list[tuple[str, str | None, list[str] | None]] = []
        cache.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", self._list_repo_files)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self._snapshot_download)

    def _files(self, repo_id: str) -> dict[str, Path]:
        if repo_id not in self.repos:
            raise not_found(repo_id)
        return self.repos[repo_id]

    def _list_repo_files(self, repo_id: str, **_: Any) -> list[str]:
        if hub_constants.HF_HUB_OFFLINE:  # as the real client does
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")
        return sorted(self._files(repo_id))

    def _snapshot_download(self, repo_id: str, *, revision: str | None = None,
                           allow_patterns: list[str] | None = None, local_files_only: bool = False,
                           **kwargs: Any) -> str:
        if local_files_only or hub_constants.HF_HUB_OFFLINE:
            return REAL_SNAPSHOT_DOWNLOAD(repo_id, revision=revision, allow_patterns=allow_patterns,
                                          local_files_only=local_files_only, **kwargs)
        files = self._files(repo_id)
        self.downloads.append((repo_id, revision, allow_patterns))
        wanted = list(filter_repo_objects(sorted(files), allow_patterns=allow_patterns))
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        return str(cache_snapshot(self.cache, repo_id, {name: files[name] for name in wanted}, commit=commit,
                                  ref=revision or "main"))
