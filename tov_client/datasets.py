"""Dataset requests: upload a local file, register a server file, list, read and delete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tov_client.models import Dataset
from tov_client.transport import CHUNK_BYTES, ByteProgress, Transport, drop_none


class DatasetsApi(Transport):
    """The ``/v1/datasets`` part of ``Client``."""

    def upload_dataset(
        self,
        source: str | os.PathLike[str] | bytes,
        *,
        name: str | None = None,
        on_progress: ByteProgress | None = None,
    ) -> Dataset:
        """Upload a local JSONL file (a path) or JSONL bytes; returns the validated dataset.

        The file is streamed; ``on_progress(done, total)`` follows the bytes sent. A bad file
        raises ``ApiError`` (422) whose ``errors`` list the rows, fields and reasons.
        """
        if isinstance(source, bytes):
            data = source
            total = len(data)

            def body() -> Any:
                if on_progress:
                    on_progress(total, total)
                return data

            name = name or "upload.jsonl"
        else:
            path = Path(source)
            total = path.stat().st_size
            name = name or path.name

            def body() -> Any:
                return _file_chunks(path, total, on_progress)

        response = self._request(
            "POST",
            "/v1/datasets",
            params={"name": name},
            headers={"Content-Type": "application/x-ndjson", "Content-Length": str(total)},
            content=body,
        )
        return Dataset.model_validate(response.json())

    def register_dataset(self, uri: str, *, name: str | None = None) -> Dataset:
        """Register a file that already lies on the server, under a configured data root
        (``file:///...``); it is validated now and read when a job runs."""
        body = drop_none({"uri": uri, "name": name})
        return Dataset.model_validate(self._request("POST", "/v1/datasets", json=body).json())

    def list_datasets(self) -> list[Dataset]:
        """This tenant's datasets, newest first."""
        return [Dataset.model_validate(d) for d in self._request("GET", "/v1/datasets").json()]

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._request("GET", f"/v1/datasets/{dataset_id}").json())

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")


def _file_chunks(path: Path, total: int, on_progress: ByteProgress | None) -> Iterator[bytes]:
    """The file in chunks, so that an upload never holds the whole file in memory."""
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
            yield chunk
