"""`hf://datasets/OWNER/NAME[@REVISION]/PATH` references, offline, from a Hugging Face hub cache.

This deployment has no hub access: huggingface_hub resolves the reference with
`local_files_only=True` inside the folder `Settings.hf_cache` (the HF_HUB_CACHE layout:
`datasets--OWNER--NAME/refs/REVISION` -> `snapshots/COMMIT/PATH` -> `blobs/...`), filled
beforehand by the operator (`hf download --repo-type dataset --cache-dir ...` on a connected
machine, or a shared cache volume). Nothing is ever fetched from the network. The resolved file
must lie (after realpath) inside the cache folder; it is copied into the artifact store with the
upload size limit counted while copying, and validated like an upload.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.errors import PayloadTooLarge
from app.core.storage import new_temp
from app.datasets.sources.network import (
    Fetched,
    RemoteRefused,
    check_plain,
    not_configured,
    shown,
)

MAX_PATH_CHARS = 1024
CHUNK_BYTES = 1 << 20
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
FORMAT = "hf://datasets/OWNER/NAME/PATH (optionally NAME@REVISION)"


@dataclass(frozen=True)
class HfRef:
    uri: str
    repo_id: str
    revision: str
    filename: str


def parse_hf(uri: str) -> HfRef:
    """Parse and check an hf:// reference; RemoteRefused says which part is wrong."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    kind, _, rest = rest.partition("/")
    if kind != "datasets":
        raise RemoteRefused(f"'{shown(uri)}': only dataset repositories are supported: {FORMAT}.")
    parts = rest.split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise RemoteRefused(f"'{shown(uri)}' names no file: use {FORMAT}.")
    owner, name_rev, filename = parts
    name, _, revision = name_rev.partition("@")
    for label, value in (("owner", owner), ("dataset name", name)):
        if not _REPO_PART.match(value) or "--" in value or ".." in value:
            raise RemoteRefused(f"'{value[:100]}' is not a valid Hugging Face {label}.")
    revision = revision or "main"
    if not _REVISION.match(revision) or ".." in revision:
        raise RemoteRefused(
            f"'{revision[:100]}' is not a supported revision (a branch, tag or commit hash)."
        )
    if len(filename) > MAX_PATH_CHARS:
        raise RemoteRefused(f"The file path is longer than {MAX_PATH_CHARS} characters.")
    if any(part in ("", ".", "..") for part in filename.split("/")) or "?" in filename:
        raise RemoteRefused(f"'{shown(uri)}': the file path has an empty, '.' or '..' segment.")
    return HfRef(uri=uri, repo_id=f"{owner}/{name}", revision=revision, filename=filename)


def locate_in_cache(ref: HfRef, cache: Path) -> Path:
    """The cached file for `ref`, through huggingface_hub, offline; RemoteRefused when absent."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HFValidationError
    except ImportError:
        raise RemoteRefused(
            "hf:// references are not configured on this deployment (huggingface_hub is not "
            "installed)."
        ) from None
    if not cache.is_dir():
        raise RemoteRefused(
            "hf:// references are unavailable: the configured Hugging Face cache folder "
            "(TOV_HF_CACHE) does not exist on the server."
        )
    try:
        found = hf_hub_download(
            repo_id=ref.repo_id,
            filename=ref.filename,
            repo_type="dataset",
            revision=ref.revision,
            cache_dir=cache,
            local_files_only=True,  # never the network: this deployment has no hub access
        )
    except (HFValidationError, ValueError) as exc:
        raise RemoteRefused(
            f"'{shown(ref.uri)}' is not a valid reference: {str(exc)[:200]}"
        ) from None
    except (OSError, EntryNotFoundError):  # LocalEntryNotFoundError: not in the cache
        raise RemoteRefused(
            f"'{shown(ref.uri)}' is not in this deployment's offline Hugging Face cache (dataset "
            f"'{ref.repo_id}', revision '{ref.revision}', file '{ref.filename[:200]}'); the "
            "server has no hub access: ask the operator to add it, or upload the file."
        ) from None
    real = Path(os.path.realpath(str(found)))
    root = Path(os.path.realpath(cache))
    if root not in real.parents or not real.is_file():
        raise RemoteRefused(f"'{shown(ref.uri)}' does not resolve to a file inside the cache.")
    return real


def fetch_hf(uri: str, *, settings: Settings, tenant: str = "") -> Fetched:
    """Copy the cached file into the artifact store's `incoming` folder (size-limited). The cache
    holds public datasets the operator put there for every tenant, so `tenant` plays no part."""
    check_plain(uri)
    if settings.hf_cache is None:
        raise not_configured("hf")
    root, limit, cache = settings.artifact_root, settings.max_upload_bytes, settings.hf_cache
    ref = parse_hf(uri)
    source = locate_in_cache(ref, cache)
    size = source.stat().st_size
    if size > limit:
        raise PayloadTooLarge(f"'{shown(uri)}' is {size} bytes; the limit is {limit}.")
    fd, path = new_temp(root)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as out:
            copied = 0
            while chunk := src.read(CHUNK_BYTES):
                copied += len(chunk)
                if copied > limit:  # the file grew after the stat
                    raise PayloadTooLarge(f"'{shown(uri)}' is larger than the limit of {limit}.")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    name = ref.filename.rsplit("/", 1)[-1]
    return Fetched(path=path, name=name[:300], content_type="")
