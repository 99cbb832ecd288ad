"""The artifact store: uploaded datasets and export files under one root folder.

Server-side paths are accepted only under configured roots, checked after `realpath` (so `..`,
symlinks and bind tricks that leave the root are refused), and only for regular files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from app.core.errors import InvalidInput, PayloadTooLarge

MAX_PATH_CHARS = 4096


def dataset_path(root: Path, tenant_id: str, dataset_id: str, suffix: str) -> Path:
    return root / "datasets" / tenant_id / f"{dataset_id}.{suffix}"


def new_temp(root: Path, suffix: str = ".part") -> tuple[int, Path]:
    """An open file descriptor and its path under the store's `incoming` folder."""
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=incoming, suffix=suffix)
    return fd, Path(name)


async def receive_to_temp(
    chunks: AsyncIterator[bytes],
    *,
    root: Path,
    limit: int,
    refusal: Callable[[], Exception] | None = None,
) -> Path:
    """Stream a request body to a temporary file, stopping as soon as `limit` bytes are passed
    (raising `refusal()` when given, e.g. the storage quota's answer, else a plain 413).

    Memory stays flat: each chunk is written and dropped; nothing is buffered beyond one chunk.
    """
    fd, path = new_temp(root)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    if refusal is not None:
                        raise refusal()
                    raise PayloadTooLarge(f"The upload exceeds the limit of {limit} bytes.")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def move_into_place(temp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(temp), final)


def _refuse(uri: str, reason: str) -> InvalidInput:
    shown = uri if len(uri) <= 200 else uri[:200] + "..."
    return InvalidInput(f"'{shown}' {reason}")


def resolve_under_roots(uri: str, roots: list[Path], *, hint: str = "") -> Path:
    """A server-side `file://` URI or path, accepted only if its real path lies under a root
    (`hint` ends the refusal: e.g. which roots the tenant has).

    The path is taken literally (no percent-decoding): `%2e%2e` is a folder name, not `..`.
    """
    raw = uri.removeprefix("file://")
    if "\x00" in raw:
        raise InvalidInput("The path contains a NUL byte.")
    if len(raw) > MAX_PATH_CHARS:
        raise _refuse(uri, f"is longer than {MAX_PATH_CHARS} characters.")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(uri, "is not a valid path (it is not valid Unicode).") from None
    path = Path(raw)
    if not path.is_absolute():
        raise _refuse(uri, "must be an absolute path under a configured data root.")
    try:
        real = Path(os.path.realpath(path))
        for root in roots:
            real_root = Path(os.path.realpath(root))
            if real == real_root or real_root in real.parents:
                if not real.is_file():
                    raise _refuse(uri, "does not exist or is not a file.")
                return real
    except OSError as exc:  # e.g. a name too long, a symlink loop
        raise _refuse(uri, f"cannot be resolved ({exc.strerror or type(exc).__name__}).") from None
    raise _refuse(uri, "is not under a configured data root." + hint)
