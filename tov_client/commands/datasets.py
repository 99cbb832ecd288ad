"""``tov datasets``: upload, register, list and show datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tov_client.client import Client
from tov_client.commands.common import JsonOpt, emit_json, err, errors_reported, out, when
from tov_client.datasets import PAGE
from tov_client.models import Dataset
from tov_client.progress import transfer_progress

datasets_app = typer.Typer(help="Upload, register and inspect datasets.", no_args_is_help=True)


def datasets_table(rows: list[Dataset]) -> Table:
    table = Table("id", "name", "format", "rows", "size", "columns", "created")
    for d in rows:
        table.add_row(
            d.id,
            d.name,
            d.row_format,
            str(d.rows),
            f"{d.size_bytes:,} B",
            ", ".join(d.columns),
            when(d.created_at),
        )
    return table


def upload(client: Client, path: Path, name: str | None, quiet: bool) -> Dataset:
    """Upload ``path``, with a progress bar on stderr unless ``quiet`` (``--json``)."""
    if quiet:
        return client.upload_dataset(path, name=name)
    with transfer_progress(f"upload {path.name}", console=err) as show:
        return client.upload_dataset(path, name=name, on_progress=show)


def _print(value: Dataset | list[Dataset], as_json: bool) -> None:
    if as_json:
        emit_json(value)
    else:
        out.print(datasets_table(value if isinstance(value, list) else [value]))


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL file.")],
    name: Annotated[str | None, typer.Option(help="Name to store (default: file name).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a local JSONL file; it is validated row by row."""
    with errors_reported(as_json), ctx.obj.client() as client:
        dataset = upload(client, path, name, quiet=as_json)
    _print(dataset, as_json)


@datasets_app.command("register")
def datasets_register(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="file:///... under one of the server's data roots.")],
    name: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a file that already lies on the server."""
    with errors_reported(as_json), ctx.obj.client() as client:
        dataset = client.register_dataset(uri, name=name)
    _print(dataset, as_json)


@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option(min=1, max=500, help="One page of N (default: every dataset).")
    ] = None,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List your datasets, newest first: all of them, or one page with --limit/--cursor."""
    with errors_reported(as_json), ctx.obj.client() as client:
        if limit is None and cursor is None:
            _print(client.list_datasets(), as_json)
            return
        page = client.dataset_page(limit=limit or PAGE, cursor=cursor)
    if as_json:  # a page as GET /v1/jobs shows one: {"items": [...], "next_cursor": ...}
        emit_json(page)
        return
    _print(page.items, as_json)
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}", highlight=False)


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, dataset_id: str, as_json: JsonOpt = False) -> None:
    """Show one dataset."""
    with errors_reported(as_json), ctx.obj.client() as client:
        dataset = client.get_dataset(dataset_id)
    _print(dataset, as_json)
