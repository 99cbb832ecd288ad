"""Verified, atomically published cache entries in a local folder shared between workers.

An entry is a folder. It is written under a temporary name next to its final place, gets a
manifest.json last (its key, and the size and sha256 of every file), and is renamed into place in
one step, so a concurrent reader sees either no entry or a whole one. Readers check the manifest's
key and every file's hash before use; an entry that fails is moved aside and treated as missing.
When two workers publish the same entry, the first rename wins and the second copy is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tov_engine.data.files import file_sha256

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class EntryStore:
    """Cache entries under `root`, each a folder named by a relative path.

    Args:
        root: the cache folder (created when the first entry is written).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        """Where entry `name` lives once published."""
        return self.root / name

    def open(self, name: str, key: str) -> Path | None:
        """The entry's folder if it is published, belongs to `key` and every file verifies."""
        folder = self.folder(name)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("cache entry %s has an unreadable manifest (%s); ignored", folder, exc)
            self._discard(folder)
            return None
        if manifest.get("key") != key:
            logger.warning("cache entry %s belongs to another key; ignored", folder)
            return None
        try:
            for file, (size, sha) in manifest.get("files", {}).items():
                path = folder / file
                if not path.is_file() or path.stat().st_size != size or file_sha256(path) != sha:
                    logger.warning("cache entry %s: %s fails its hash; discarded", folder, file)
                    self._discard(folder)
                    return None
        except OSError as exc:
            logger.warning("cache entry %s cannot be read (%s); ignored", folder, exc)
            return None
        return folder

    def start(self, name: str) -> Path:
        """A new temporary folder beside entry `name`'s final place, to fill and then `seal`."""
        final = self.folder(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        return tmp

    def seal(self, tmp: Path, name: str, key: str) -> None:
        """Write the manifest of a filled temporary folder and publish it as entry `name`."""
        try:
            files = {p.name: (p.stat().st_size, file_sha256(p)) for p in sorted(tmp.iterdir())}
            (tmp / MANIFEST).write_text(json.dumps({"key": key, "files": files}))
            self._publish(tmp, self.folder(name), key)
        finally:
            self.drop(tmp)

    @staticmethod
    def drop(tmp: Path) -> None:
        """Remove an unpublished temporary folder (nothing happens if it was published)."""
        shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, name: str, key: str) -> Iterator[Path]:
        """A temporary folder to fill; on a clean exit it is sealed and published as `name`."""
        tmp = self.start(name)
        try:
            yield tmp
        except BaseException:
            self.drop(tmp)
            raise
        self.seal(tmp, name, key)

    def _publish(self, tmp: Path, final: Path, key: str) -> None:
        for _ in range(2):
            try:
                os.rename(tmp, final)  # atomic; fails when `final` exists and is not empty
                logger.info("cache entry written: %s", final)
                return
            except OSError:
                if self.open(final.relative_to(self.root).as_posix(), key) is not None:
                    return  # another worker published the same entry first
                self._discard(final)  # a broken or foreign entry: replace it
        logger.warning("could not publish cache entry %s; continuing without it", final)

    @staticmethod
    def _discard(folder: Path) -> None:
        trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except OSError:
            return  # already gone (another worker discarded it)
        shutil.rmtree(trash, ignore_errors=True)
