"""``Client``: the ToV Select API over httpx, typed, with retries and helpers for results.

Each role lives in its own module (``transport``, ``datasets``, ``jobs``, ``downloads``,
``catalog``); ``Client`` is all of them in one object.
"""

from __future__ import annotations

from tov_client.catalog import ModelsApi
from tov_client.datasets import DatasetsApi
from tov_client.downloads import DownloadsApi
from tov_client.jobs import JobProgress, JobsApi
from tov_client.transport import CHUNK_BYTES, DEFAULT_URL, ByteProgress
from tov_client.webhooks import WebhooksApi

__all__ = ["CHUNK_BYTES", "DEFAULT_URL", "ByteProgress", "Client", "JobProgress"]


class Client(DatasetsApi, JobsApi, DownloadsApi, ModelsApi, WebhooksApi):
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
