"""Result requests: download a job's selection, scores or selected rows, as a file, bytes, an
Arrow table or a pandas frame."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tov_client.models import ExportFormat, HarmfulRows, ResultKind
from tov_client.transport import CHUNK_BYTES, ByteProgress, Transport, drop_none

if TYPE_CHECKING:
    import pandas
    import pyarrow


class DownloadsApi(Transport):
    """The ``/v1/jobs/{id}/{selection,scores,subset}`` part of ``Client``."""

    def download(
        self,
        job_id: str,
        what: ResultKind = "selection",
        *,
        format: ExportFormat = "jsonl",
        dest: str | os.PathLike[str] | None = None,
        selection_id: str | None = None,
        target: int | None = None,
        on_progress: ByteProgress | None = None,
        explain: bool = False,
    ) -> Path:
        """Download a result file and return where it was written.

        ``what``: ``selection`` (index, score, source), ``scores`` (index, score, length for
        every pool row) or ``subset`` (the selected rows themselves); ``target``: which target
        of a multi-target job (default 0, or a named selection's own). ``dest`` may be a file
        or a folder (an existing one, or a path ending in ``/``: the server's file name is
        used); default: the current folder. ``explain`` (selection, scores): add the explanation
        columns (losses before and after, length bin and rank in it; for a selection also why
        each row was picked, ``reason``).
        The file appears complete or not at all (written to ``.part``, then renamed).
        """
        params = _params(format, selection_id, target, explain)
        response = self._request("GET", f"/v1/jobs/{job_id}/{what}", params=params, stream=True)
        try:
            path = _target_path(dest, response, f"{job_id}-{what}.{format}")
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            total = _content_length(response)
            done = 0
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
            partial.replace(path)
        finally:
            response.close()
        return path

    def download_bytes(
        self,
        job_id: str,
        what: ResultKind = "selection",
        *,
        format: ExportFormat = "jsonl",
        selection_id: str | None = None,
        target: int | None = None,
        explain: bool = False,
    ) -> bytes:
        """A result file's bytes, in memory."""
        params = _params(format, selection_id, target, explain)
        return self._request("GET", f"/v1/jobs/{job_id}/{what}", params=params).content

    def read_table(
        self,
        job_id: str,
        what: ResultKind = "selection",
        *,
        selection_id: str | None = None,
        target: int | None = None,
        explain: bool = False,
    ) -> pyarrow.Table:
        """A result as a ``pyarrow.Table`` (fetched as Parquet)."""
        import pyarrow.parquet as pq

        data = self.download_bytes(
            job_id,
            what,
            format="parquet",
            selection_id=selection_id,
            target=target,
            explain=explain,
        )
        return pq.read_table(io.BytesIO(data))

    def read_frame(
        self,
        job_id: str,
        what: ResultKind = "selection",
        *,
        selection_id: str | None = None,
        target: int | None = None,
        explain: bool = False,
    ) -> pandas.DataFrame:
        """A result as a ``pandas.DataFrame`` (needs pandas: ``pip install tov-select[client]``)."""
        table = self.read_table(
            job_id, what, selection_id=selection_id, target=target, explain=explain
        )
        return table.to_pandas()

    def harmful_rows(
        self, job_id: str, *, limit: int = 20, target: int | None = None
    ) -> HarmfulRows:
        """The pool rows whose loss rose most when the model was nudged toward the target
        (``loss_after - loss_before`` largest first, only rows whose loss rose; ``limit`` up to
        1000), each with a text preview and whether it was selected."""
        params = drop_none({"limit": limit, "target": target})
        response = self._request("GET", f"/v1/jobs/{job_id}/harmful", params=params)
        return HarmfulRows.model_validate(response.json())

    def selected_indices(
        self, job_id: str, *, selection_id: str | None = None, target: int | None = None
    ) -> list[int]:
        """The selected pool row indices, ascending."""
        table = self.read_table(job_id, "selection", selection_id=selection_id, target=target)
        return sorted(int(i) for i in table.column("index").to_pylist())


def _params(
    fmt: ExportFormat, selection_id: str | None, target: int | None, explain: bool
) -> dict[str, object]:
    """A download's query; ``explain`` only when asked (older servers know no such parameter)."""
    params = drop_none({"format": fmt, "selection_id": selection_id, "target": target})
    return {**params, "explain": "true"} if explain else params


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


_FILENAME = re.compile(r'filename="?([^";]+)"?')


def _target_path(
    dest: str | os.PathLike[str] | None, response: httpx.Response, fallback: str
) -> Path:
    """Where a download goes: ``dest`` as a file, or the server's file name (only its last
    part: a name never escapes the folder) inside ``dest`` or the current folder."""
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = Path(match.group(1)).name if match else fallback
    if dest is None:
        return Path.cwd() / name
    path = Path(dest)
    folder = path.is_dir() or str(dest).endswith(("/", os.sep))
    return path / name if folder else path
