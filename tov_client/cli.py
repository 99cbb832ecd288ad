"""``tov``: the ToV Select command line (typer + rich).

The API URL and key come from ``--api-url``/``--api-key`` or ``TOV_API_URL``/``TOV_API_KEY``.
Every command takes ``--json`` for machine-readable output on stdout; progress and errors go to
stderr. Exit codes: 0 ok, 1 API or connection error, 2 usage, 3 job failed or cancelled,
4 timed out waiting.

The commands live in ``tov_client.commands`` by group (datasets, jobs, downloads, models);
this module assembles them into ``app``, the ``tov`` console script.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tov_client.commands.common import State, emit_json, errors_reported
from tov_client.commands.datasets import datasets_app
from tov_client.commands.downloads import download
from tov_client.commands.jobs import jobs_app
from tov_client.commands.models import models
from tov_client.commands.webhooks import webhooks_app
from tov_client.transport import DEFAULT_URL

__all__ = ["State", "app", "emit_json", "errors_reported"]

app = typer.Typer(
    name="tov",
    help="ToV Select: choose the training data that helps your target task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")
app.command("download")(download)
app.command("models")(models)


@app.callback()
def main(
    ctx: typer.Context,
    api_url: Annotated[
        str, typer.Option(envvar="TOV_API_URL", help="Base URL of the API.")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None, typer.Option(envvar="TOV_API_KEY", help="API key (Bearer).", show_default=False)
    ] = None,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 60.0,
) -> None:
    """ToV Select from the command line."""
    ctx.obj = State(api_url=api_url, api_key=api_key, timeout=timeout)


if __name__ == "__main__":  # pragma: no cover
    app()
