"""Dataset requests: upload a local file, register a server file, list, read and delete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tov_client.models import Dataset, DatasetPage
from tov_client.transport import CHUNK_BYTES, ByteProgress, Transport, drop_none

PAGE = 100
"""Datasets a page by default (the API allows up to 500)."""


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

    def register_dataset(self, uri: str, *, name: str | None = None, wait: bool = True) -> Dataset:
        """Register a file that already lies on the server, under a configured data root
        (``file:///...``), or copy in a remote reference (``https://``, ``s3://``, ``hf://``).

        A ``file://`` path is validated before the answer. A remote reference is fetched and
        validated by the server after it answers: with ``wait=True`` (the default) the server
        answers only when the dataset is ``ready`` (or raises ``ApiError`` with the row errors);
        with ``wait=False`` the dataset comes back ``validating`` and ``get_dataset`` shows when
        it is ``ready`` or ``failed``. A job may name a ``validating`` dataset: it waits for it.
        """
        body = drop_none({"uri": uri, "name": name})
        params = {"wait": "true"} if wait else None
        response = self._request("POST", "/v1/datasets", json=body, params=params)
        return Dataset.model_validate(response.json())

    def list_datasets(self, *, limit: int | None = None) -> list[Dataset]:
        """This tenant's datasets, newest first: all of them (following every page), or the
        newest ``limit``. For one page at a time use ``dataset_page``."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (or None for every dataset)")
        found: list[Dataset] = []
        for dataset in self.iter_datasets(page_size=min(limit or PAGE, PAGE)):
            found.append(dataset)
            if len(found) == limit:  # stop before asking for a page not needed
                break
        return found

    def dataset_page(self, *, limit: int = PAGE, cursor: str | None = None) -> DatasetPage:
        """One page of datasets, newest first; pass its ``next_cursor`` as ``cursor`` for the
        next (None on the last page)."""
        params = drop_none({"limit": limit, "cursor": cursor})
        response = self._request("GET", "/v1/datasets", params=params)
        body = response.json()
        if isinstance(body, dict):  # an envelope like GET /v1/jobs, should the API adopt one
            return DatasetPage.model_validate(body)
        return DatasetPage(
            items=[Dataset.model_validate(d) for d in body],
            next_cursor=response.headers.get("X-Next-Cursor") or None,
        )

    def iter_datasets(self, *, page_size: int = PAGE) -> Iterator[Dataset]:
        """Every dataset of the tenant, newest first, fetched ``page_size`` at a time. The
        cursor is a keyset on (created_at, id): datasets added meanwhile are not repeated."""
        cursor: str | None = None
        while True:
            page = self.dataset_page(limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

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
