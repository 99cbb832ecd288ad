"""The client package by role: no module over the 400-line limit, the public surface kept."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import tov_client
from tov_client import cli
from tov_client.client import Client

PACKAGE = Path(tov_client.__file__).parent
ROOT = PACKAGE.parent
PUBLIC_METHODS = {
    "upload_dataset", "register_dataset", "list_datasets", "get_dataset", "delete_dataset",
    "create_job", "get_job", "list_jobs", "iter_jobs", "cancel_job", "delete_job", "job_events",
    "wait", "create_selection", "get_selection", "list_selections", "download", "download_bytes",
    "read_table", "read_frame", "selected_indices", "list_models", "close",
}  # fmt: skip


def test_no_client_module_is_over_the_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_the_public_surface_is_kept() -> None:
    assert {"Client", "ApiError", "Job", "Dataset", "RetryPolicy"} <= set(tov_client.__all__)
    assert tov_client.Client is Client
    assert {name for name, _ in inspect.getmembers(Client, inspect.isfunction)} >= PUBLIC_METHODS
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tov"] == "tov_client.cli:app"
    commands = {c.name for c in cli.app.registered_commands}
    groups = {g.name for g in cli.app.registered_groups}
    assert commands == {"download", "models"} and groups == {"datasets", "jobs", "webhooks"}
