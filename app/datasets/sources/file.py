"""`file://` references and absolute paths: a server-side file under a data root of the tenant's
(its own roots or the shared ones: app.datasets.sources.tenancy).

The file is not copied: the dataset refers to it where it is (validated now, read later). Its
name must carry a dataset suffix (.jsonl/.ndjson, .parquet/.pq or .csv).
"""

from __future__ import annotations

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.storage import resolve_under_roots
from app.datasets.sources.network import Fetched
from app.datasets.sources.tenancy import data_roots_for, data_roots_hint
from app.datasets.validation.detection import format_for_name


def locate_file(uri: str, *, settings: Settings, tenant: str) -> Fetched:
    """The server-side file `uri` names, if it lies under a data root `tenant` may read and has
    a dataset suffix."""
    roots = data_roots_for(settings, tenant)
    path = resolve_under_roots(uri, roots, hint=data_roots_hint(settings, tenant))
    if format_for_name(path.name) is None:
        raise InvalidInput(
            f"'{uri}': the file type is not supported; use .jsonl/.ndjson, .parquet/.pq or .csv."
        )
    return Fetched(path=path, name=path.name, content_type="", in_place=True)
