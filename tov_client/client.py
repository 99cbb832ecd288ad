"""``Client``: the ToV Select API over httpx, typed, with retries and helpers for results."""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tov_client.errors import JobFailed, TransportError, WaitTimeout
from tov_client.models import (
    Dataset,
    ExportFormat,
    Job,
    JobEvent,
    JobPage,
    ResultKind,
    Selection,
)
from tov_client.retry import RetryPolicy, send_with_retries

if TYPE_CHECKING:
    import pandas
    import pyarrow

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_BYTES = 1 << 20
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})  # safe to send twice
ByteProgress = Callable[[int, int | None], None]
"""Called as ``fn(bytes_done, bytes_total_or_None)`` while a file moves."""
JobProgress = Callable[[Job], None]
"""Called with each polled state of a job while waiting."""


def _ref(value: str | Dataset) -> str:
    return value.id if isinstance(value, Dataset) else str(value)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Client:
    """A client of one ToV Select deployment.

    >>> with Client("http://127.0.0.1:8000", api_key="tov_...") as tov:
    ...     pool = tov.upload_dataset("pool.jsonl")
    ...     job = tov.create_job(pool, "file:///data/val.jsonl", budget=0.1)
    ...     job = tov.wait(job.id)
    ...     frame = tov.read_frame(job.id, "selection")

    ``base_url`` and ``api_key`` default to ``TOV_API_URL`` and ``TOV_API_KEY``. Pass
    ``http_client`` to reuse an ``httpx.Client`` (or FastAPI's ``TestClient``); its base URL is
    kept and the key is sent on every request.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("TOV_API_KEY")
        self.retry = retry or RetryPolicy()
        self._owns_http = http_client is None
        if http_client is None:
            url = base_url or os.environ.get("TOV_API_URL") or DEFAULT_URL
            http_client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self._http = http_client
        self.base_url = str(self._http.base_url).rstrip("/")

    # -- plumbing -----------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: Callable[[], Any] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        def build() -> httpx.Request:
            return self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                headers=self._headers(headers),
                content=content() if content is not None else None,
            )

        idempotent = method in IDEMPOTENT_METHODS or "Idempotency-Key" in (headers or {})
        return send_with_retries(
            self._http, build, self.retry, stream=stream, idempotent=idempotent
        )

    # -- datasets -----------------------------------------------------------------------------

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
        body = _drop_none({"uri": uri, "name": name})
        return Dataset.model_validate(self._request("POST", "/v1/datasets", json=body).json())

    def list_datasets(self) -> list[Dataset]:
        """This tenant's datasets, newest first."""
        return [Dataset.model_validate(d) for d in self._request("GET", "/v1/datasets").json()]

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._request("GET", f"/v1/datasets/{dataset_id}").json())

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(
        self,
        pool: str | Dataset,
        validation: str | Dataset | Sequence[str | Dataset] | None = None,
        *,
        targets: Sequence[str | Dataset] | None = None,
        model: str | None = None,
        budget: float | None = None,
        strategy: str | None = None,
        method: str | None = None,
        task: str | None = None,
        seed: int | None = None,
        max_length: int | None = None,
        tov: Mapping[str, Any] | None = None,
        selection: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> Job:
        """Start a selection job (the API answers 202 with the queued job).

        ``pool`` and ``validation`` are dataset ids (or ``Dataset`` objects) or server-side
        ``file://`` paths. For a multi-target job give ``targets``, 2 to 16 validation sets
        (or a list as ``validation``): one job scores the pool for each, sharing the work that
        does not depend on the validation set; fetch target k's results with ``target=k``.
        ``budget`` (a count, or a fraction below 1) and ``strategy`` are
        shortcuts into ``selection``; ``tov`` holds the Train-on-Validation knobs. An
        ``Idempotency-Key`` (a fresh uuid4 unless given) makes the automatic retries safe:
        the server returns the same job for the same key and body. A create that gets no answer
        within the client's timeout is retried with the same key; when the retries run out the
        ``TransportError`` names the key to retry with by hand.
        """
        if isinstance(validation, Sequence) and not isinstance(validation, str):
            if targets is not None:
                raise TypeError("give the validation sets as `validation` or `targets`, not both")
            targets = list(validation)
            validation = None
            if len(targets) == 1:  # one validation set is a plain job
                validation, targets = targets[0], None
        if (validation is None) == (targets is None):
            raise TypeError("give exactly one of `validation` or `targets`")
        chosen = dict(selection or {})
        chosen.update(_drop_none({"budget": budget, "strategy": strategy}))
        body = _drop_none(
            {
                "pool": _ref(pool),
                "validation": None if validation is None else _ref(validation),
                "targets": None if targets is None else [_ref(t) for t in targets],
                "model": model,
                "method": method,
                "task": task,
                "seed": seed,
                "max_length": max_length,
                "tov": dict(tov) if tov else None,
                "selection": chosen or None,
                "metadata": dict(metadata) if metadata else None,
            }
        )
        body.update(extra)
        key = idempotency_key or str(uuid.uuid4())
        try:
            response = self._request(
                "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key}
            )
        except TransportError as exc:
            if not exc.maybe_delivered:
                raise
            raise TransportError(
                f"{exc} To retry safely, call create_job again with the same arguments and "
                f"idempotency_key={key!r} (over HTTP: the same body with the header "
                f"'Idempotency-Key: {key}'): the server then returns the job it made, if any, "
                "instead of starting a second one.",
                maybe_delivered=True,
                idempotency_key=key,
            ) from exc
        return Job.model_validate(response.json())

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def list_jobs(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; ``metadata`` filters by exact key/value matches."""
        params: list[tuple[str, Any]] = [("limit", limit)]
        params += [(k, v) for k, v in (("cursor", cursor), ("status", status)) if v]
        params += [("metadata", f"{k}:{v}") for k, v in (metadata or {}).items()]
        return JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(self, *, page_size: int = 100, **filters: Any) -> Iterator[Job]:
        """Every job matching ``filters`` (see ``list_jobs``), following the cursor."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel_job(self, job_id: str) -> Job:
        """Ask the job to stop: a queued job is cancelled at once, a running one soon after."""
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def delete_job(self, job_id: str) -> None:
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def job_events(self, job_id: str) -> list[JobEvent]:
        """The job's history: created, claimed, re-sent, succeeded, ..."""
        rows = self._request("GET", f"/v1/jobs/{job_id}/events").json()
        return [JobEvent.model_validate(r) for r in rows]

    def wait(
        self,
        job_id: str,
        *,
        on_progress: JobProgress | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        check: bool = True,
    ) -> Job:
        """Poll until the job is succeeded, failed or cancelled and return its final state.

        ``on_progress(job)`` sees every polled state (see ``tov_client.progress`` for a rich
        progress bar). With ``check`` (the default) a failed or cancelled job raises
        ``JobFailed``; past ``timeout`` seconds ``WaitTimeout`` is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_progress:
                on_progress(job)
            if job.done:
                if check and not job.succeeded:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)
            time.sleep(poll_interval)

    # -- selections ---------------------------------------------------------------------------

    def create_selection(
        self,
        job_id: str,
        *,
        budget: float,
        strategy: str | None = None,
        num_bins: int | None = None,
        seed: int | None = None,
        target: int | None = None,
    ) -> Selection:
        """Re-select from a succeeded job's stored scores (no GPU); poll ``get_selection``.
        ``target``: which target of a multi-target job (default 0)."""
        body = _drop_none(
            {
                "budget": budget,
                "strategy": strategy,
                "num_bins": num_bins,
                "seed": seed,
                "target": target,
            }
        )
        response = self._request("POST", f"/v1/jobs/{job_id}/selections", json=body)
        return Selection.model_validate(response.json())

    def get_selection(self, job_id: str, selection_id: str) -> Selection:
        path = f"/v1/jobs/{job_id}/selections/{selection_id}"
        return Selection.model_validate(self._request("GET", path).json())

    def list_selections(self, job_id: str) -> list[Selection]:
        rows = self._request("GET", f"/v1/jobs/{job_id}/selections").json()
        return [Selection.model_validate(r) for r in rows]

    # -- results ------------------------------------------------------------------------------

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
    ) -> Path:
        """Download a result file and return where it was written.

        ``what``: ``selection`` (index, score, source), ``scores`` (index, score, length for
        every pool row) or ``subset`` (the selected rows themselves); ``target``: which target
        of a multi-target job (default 0, or a named selection's own). ``dest`` may be a file
        or a folder (an existing one, or a path ending in ``/``: the server's file name is
        used); default: the current folder.
        The file appears complete or not at all (written to ``.part``, then renamed).
        """
        params = _drop_none({"format": format, "selection_id": selection_id, "target": target})
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
    ) -> bytes:
        """A result file's bytes, in memory."""
        params = _drop_none({"format": format, "selection_id": selection_id, "target": target})
        return self._request("GET", f"/v1/jobs/{job_id}/{what}", params=params).content

    def read_table(
        self,
        job_id: str,
        what: ResultKind = "selection",
        *,
        selection_id: str | None = None,
        target: int | None = None,
    ) -> pyarrow.Table:
        """A result as a ``pyarrow.Table`` (fetched as Parquet)."""
        import pyarrow.parquet as pq

        data = self.download_bytes(
            job_id, what, format="parquet", selection_id=selection_id, target=target
        )
        return pq.read_table(io.BytesIO(data))

    def read_frame(
        self,
        job_id: str,
        what: ResultKind = "selection",
        *,
        selection_id: str | None = None,
        target: int | None = None,
    ) -> pandas.DataFrame:
        """A result as a ``pandas.DataFrame`` (needs pandas: ``pip install tov-select[client]``)."""
        return self.read_table(job_id, what, selection_id=selection_id, target=target).to_pandas()

    def selected_indices(
        self, job_id: str, *, selection_id: str | None = None, target: int | None = None
    ) -> list[int]:
        """The selected pool row indices, ascending."""
        table = self.read_table(job_id, "selection", selection_id=selection_id, target=target)
        return sorted(int(i) for i in table.column("index").to_pylist())


def _file_chunks(path: Path, total: int, on_progress: ByteProgress | None) -> Iterator[bytes]:
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
            yield chunk


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


_FILENAME = re.compile(r'filename="?([^";]+)"?')


def _target_path(
    dest: str | os.PathLike[str] | None, response: httpx.Response, fallback: str
) -> Path:
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = Path(match.group(1)).name if match else fallback
    if dest is None:
        return Path.cwd() / name
    path = Path(dest)
    folder = path.is_dir() or str(dest).endswith(("/", os.sep))
    return path / name if folder else path
