"""Python client and CLI (``tov``) for the ToV Select API.

>>> from tov_client import Client
>>> tov = Client("http://127.0.0.1:8000", api_key="tov_...")
"""

from tov_client.client import Client
from tov_client.errors import ApiError, JobFailed, TovError, TransportError, WaitTimeout
from tov_client.models import (
    Dataset,
    DatasetPage,
    HarmfulRow,
    HarmfulRows,
    Job,
    JobError,
    JobEvent,
    JobPage,
    Leak,
    LeakPage,
    ModelInfo,
    ModelList,
    Progress,
    Selection,
    Verify,
)
from tov_client.retry import RetryPolicy

__all__ = [
    "ApiError",
    "Client",
    "Dataset",
    "DatasetPage",
    "HarmfulRow",
    "HarmfulRows",
    "Job",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobPage",
    "Leak",
    "LeakPage",
    "ModelInfo",
    "ModelList",
    "Progress",
    "RetryPolicy",
    "Selection",
    "TovError",
    "TransportError",
    "Verify",
    "WaitTimeout",
]
