"""The artifact store: uploaded datasets and export files under one root folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from app.errors import InvalidInput, PayloadTooLarge


def dataset_path(root: Path, tenant_id: str, dataset_id: str, suffix: str) -> Path:
    return root / "datasets" / tenant_id / f"{dataset_id}.{suffix}"


async def receive_to_temp(chunks: AsyncIterator[bytes], *, root: Path, limit: int) -> Path:
    """Stream a request body to a temporary file, stopping as soon as `limit` bytes are passed."""
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=incoming, suffix=".part")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The upload exceeds the limit of {limit} bytes.")
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def move_into_place(temp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(temp), final)


def resolve_under_roots(uri: str, roots: list[Path]) -> Path:
    """A server-side `file://` URI or path, accepted only if its real path lies under a root."""
    raw = uri.removeprefix("file://")
    if "\x00" in raw:
        raise InvalidInput("The path contains a NUL byte.")
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidInput(f"'{uri}' must be an absolute path under a configured data root.")
    real = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real_root in real.parents:
            if not real.is_file():
                raise InvalidInput(f"'{uri}' does not exist or is not a file.")
            return real
    raise InvalidInput(f"'{uri}' is not under a configured data root.")
