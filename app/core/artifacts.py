"""The artifact store behind fsspec: a local folder by default, `s3://bucket/prefix` in production.

What lives in it (keys relative to the store's root): uploaded and copied datasets
(`datasets/<tenant>/<id>.<ext>`), a staged job's trained rounds (`jobs/<id>/rounds/...`) and its
shard scores (`jobs/<id>/shards/<n>.npy`). Workers on several hosts then share nothing but
Postgres, Redis and the store. The engine works on local paths only, so every process keeps a
local scratch folder (`TOV_ARTIFACT_ROOT`) and syncs with the store at stage boundaries; when the
store is that very folder (the default) every sync is a no-op.

Atomic writes: a local file is written under a temporary name, fsynced and renamed; an S3 object
is written with one PUT (`pipe_file`), which S3 makes visible whole or not at all, so only
objects that fit one PUT (shard scores: 8 bytes a row) go through `write_bytes`. Trees are
uploaded with their `done` markers last, so a reader that sees a stage's marker sees its files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import fsspec

from app.core.config import Settings, get_settings

MARKERS = ("done", "manifest.json")  # written last: a stage (a folder) counts once they exist
SINGLE_PUT_BYTES = 5 * 1024**3  # S3's largest single PUT


class ArtifactStore:
    """One store: an fsspec filesystem and the root under which every key lives.

    Args:
        fs: the filesystem (local or s3fs). root: the root in the filesystem's own spelling
            (an absolute folder, or `bucket/prefix`). scheme: "" (local) or "s3".
    """

    def __init__(self, fs: Any, root: str, scheme: str) -> None:
        self.fs, self.root, self.scheme = fs, root.rstrip("/"), scheme

    @property
    def local(self) -> bool:
        return not self.scheme

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"'{key}' is not a key of the artifact store")
        return f"{self.root}/{key}"

    def url(self, key: str) -> str:
        """What a dataset row records as its uri: an absolute path, or `s3://bucket/prefix/key`."""
        path = self._path(key)
        return path if self.local else f"{self.scheme}://{path}"

    def owns(self, uri: str) -> bool:
        """Whether `uri` names an object of this store (S3 stores: local paths are never theirs)."""
        prefix = f"{self.scheme}://{self.root}/" if self.scheme else f"{self.root}/"
        return uri.startswith(prefix)

    def holds(self, folder: Path, prefix: str) -> bool:
        """Whether the local `folder` is the store's own `prefix` (then syncing is a no-op)."""
        return self.local and os.path.realpath(folder) == os.path.realpath(self._path(prefix))

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def open(self, key: str) -> IO[bytes]:
        """The object for reading (seekable: Parquet footers are read first)."""
        return self.fs.open(self._path(key), "rb")  # type: ignore[no-any-return]

    def read_bytes(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write atomically: readers see the whole object or none (see the module docstring)."""
        if len(data) > SINGLE_PUT_BYTES:
            raise ValueError(f"{len(data)} bytes do not fit one atomic PUT ({key})")
        path = self._path(key)
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, local: Path, key: str, *, move: bool = False) -> None:
        """Copy (or move, for a file of ours such as a received upload) `local` to `key`."""
        path = self._path(key)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            (shutil.move if move else shutil.copyfile)(str(local), path)
            return
        self.fs.put_file(str(local), path)
        if move:
            local.unlink(missing_ok=True)

    def get_file(self, key: str, local: Path) -> None:
        """Download `key` to `local`, atomically (a temporary name renamed: no half files)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            self.fs.get_file(self._path(key), str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm_file(path)

    def delete_tree(self, prefix: str) -> None:
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under `prefix`: its key relative to the prefix, and its size."""
        base = self._path(prefix)
        found = self.fs.find(base, detail=True) if self.fs.exists(base) else {}
        return {
            name[len(base) + 1 :]: int(info.get("size") or 0)
            for name, info in found.items()
            if info.get("type", "file") != "directory"
        }

    def upload_tree(self, folder: Path, prefix: str) -> int:
        """Upload the files of `folder` the store lacks (or holds at another size), markers
        last. Returns how many were sent."""
        if self.holds(folder, prefix):
            return 0
        have = self.sizes(prefix)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        files.sort(key=lambda p: p.name in MARKERS)  # stable: markers last
        sent = 0
        for file in files:
            rel = file.relative_to(folder).as_posix()
            if have.get(rel) != file.stat().st_size:
                self.put_file(file, f"{prefix}/{rel}")
                sent += 1
        return sent

    def download_tree(self, prefix: str, folder: Path) -> int:
        """Download the objects under `prefix` that `folder` lacks (or holds at another size),
        markers last. Returns how many were fetched."""
        if self.holds(folder, prefix):
            return 0
        wanted = sorted(self.sizes(prefix).items(), key=lambda kv: kv[0].split("/")[-1] in MARKERS)
        fetched = 0
        for rel, size in wanted:
            local = folder / rel
            if not _kept(local, folder, size):
                self.get_file(f"{prefix}/{rel}", local)
                fetched += 1
        return fetched


def _kept(local: Path, folder: Path, size: int) -> bool:
    """A local copy worth keeping: the same size, in a stage folder finished here (its `done`
    marker present) or at the top; a stage left half-written by a dead attempt is refetched."""
    if not local.is_file() or local.stat().st_size != size:
        return False
    return local.parent == folder or (local.parent / "done").is_file()


def _s3_filesystem(settings: Settings) -> Any:
    import s3fs

    secret = settings.artifact_s3_secret_access_key
    return s3fs.S3FileSystem(
        endpoint_url=settings.artifact_s3_endpoint_url,
        key=settings.artifact_s3_access_key_id,
        secret=secret.get_secret_value() if secret else None,
        client_kwargs={"region_name": settings.artifact_s3_region}
        if settings.artifact_s3_region
        else {},
        config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 5}},
        use_listings_cache=False,
        skip_instance_cache=True,
    )


_stores: dict[tuple[object, ...], ArtifactStore] = {}


def artifact_store(settings: Settings | None = None) -> ArtifactStore:
    """The store the settings name (TOV_ARTIFACT_STORE; unset: the scratch folder itself)."""
    settings = settings or get_settings()
    spec = settings.artifact_store or str(settings.artifact_root)
    secret = settings.artifact_s3_secret_access_key
    key = (
        spec,
        str(settings.artifact_root),
        settings.artifact_s3_endpoint_url,
        settings.artifact_s3_access_key_id,
        secret.get_secret_value() if secret else None,
        settings.artifact_s3_region,
    )
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = _build(spec, settings)
    return store


def _build(spec: str, settings: Settings) -> ArtifactStore:
    if spec.startswith("s3://"):
        root = spec.removeprefix("s3://").strip("/")
        if not root:
            raise ValueError(f"TOV_ARTIFACT_STORE '{spec}' names no bucket")
        return ArtifactStore(_s3_filesystem(settings), root, "s3")
    if "://" in spec and not spec.startswith("file://"):
        raise ValueError(f"TOV_ARTIFACT_STORE '{spec}': only a folder, file:// or s3:// is known")
    folder = Path(spec.removeprefix("file://")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return ArtifactStore(fsspec.filesystem("file"), str(folder), "")


def dataset_key(tenant_id: str, dataset_id: str, suffix: str) -> str:
    return f"datasets/{tenant_id}/{dataset_id}.{suffix}"


def job_key(job_id: str, *parts: str) -> str:
    return "/".join(("jobs", job_id, *parts))


def _remote_key(uri: str, store: ArtifactStore) -> str | None:
    """The key of a dataset uri kept in a remote store; None for a local path."""
    if not uri.startswith("s3://"):
        return None
    if not store.owns(uri):
        raise FileNotFoundError(f"'{uri}' is not in the artifact store ({store.url('')[:-1]})")
    return uri.removeprefix(f"s3://{store.root}/")


def open_dataset(uri: str, settings: Settings | None = None) -> IO[bytes]:
    """A dataset's bytes: a local path (a data root or a folder store), or an object of the
    S3 store."""
    store = artifact_store(settings)
    key = _remote_key(uri, store)
    return open(uri, "rb") if key is None else store.open(key)


def dataset_available(uri: str, settings: Settings | None = None) -> bool:
    store = artifact_store(settings)
    try:
        key = _remote_key(uri, store)
    except FileNotFoundError:
        return False
    return Path(uri).is_file() if key is None else store.exists(key)


def remove_dataset(uri: str, settings: Settings | None = None) -> None:
    """Remove a stored dataset's file or object (gone already: nothing to do)."""
    store = artifact_store(settings)
    key = _remote_key(uri, store)
    if key is None:
        Path(uri).unlink(missing_ok=True)
    else:
        store.delete(key)


def local_dataset(uri: str, sha256: str, settings: Settings) -> Path:
    """A dataset as a local file the engine can read: a local uri as is; an object of the S3
    store downloaded once into the scratch folder (`inputs/<sha256>.<ext>`), checked against
    the digest the validation recorded, and reused by every later job on this host."""
    store = artifact_store(settings)
    key = _remote_key(uri, store)
    if key is None:
        return Path(uri)
    local = Path(settings.artifact_root) / "inputs" / f"{sha256}{Path(key).suffix}"
    if local.is_file():
        return local
    store.get_file(key, local)
    digest = hashlib.sha256()
    with local.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        local.unlink(missing_ok=True)
        raise OSError(f"'{uri}' does not hold the bytes validated (SHA-256 differs)")
    return local
