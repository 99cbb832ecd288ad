"""``tov webhooks``: register, list and delete signed webhook endpoints; show deliveries."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tov_client.commands.common import JsonOpt, emit_json, err, errors_reported, out, when
from tov_client.webhooks import EVENT_TYPES, Webhook

webhooks_app = typer.Typer(
    help="Signed webhooks: be told when a job ends (Standard Webhooks).", no_args_is_help=True
)


def _table(rows: list[Webhook]) -> Table:
    table = Table("id", "url", "events", "created")
    for w in rows:
        table.add_row(w.id, w.url, ", ".join(w.event_types), when(w.created_at))
    return table


@webhooks_app.command("create")
def webhooks_create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The https:// receiver.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help=f"One of {', '.join(EVENT_TYPES)}; repeatable."),
    ] = None,
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an endpoint; its signing secret is printed once."""
    with errors_reported(as_json), ctx.obj.client() as client:
        created = client.create_webhook(url, event_types=event, description=description)
    if as_json:
        emit_json(created)
        return
    out.print(_table([created]))
    err.print(
        f"signing secret (shown once, keep it): [bold]{created.secret}[/]",
        highlight=False,
        soft_wrap=True,  # one line, to copy whole
    )


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List your endpoints, newest first."""
    with errors_reported(as_json), ctx.obj.client() as client:
        rows = client.list_webhooks()
    if as_json:
        emit_json(rows)
    else:
        out.print(_table(rows))


@webhooks_app.command("delete")
def webhooks_delete(ctx: typer.Context, webhook_id: str, as_json: JsonOpt = False) -> None:
    """Delete an endpoint (its pending deliveries are dropped)."""
    with errors_reported(as_json), ctx.obj.client() as client:
        client.delete_webhook(webhook_id)
    if as_json:
        emit_json({"deleted": webhook_id})
    else:
        err.print(f"deleted {webhook_id}", highlight=False)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context,
    webhook_id: str,
    status: Annotated[
        str | None, typer.Option(help="pending | delivered | failed (default: all)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The endpoint's deliveries, newest first, with their attempts."""
    with errors_reported(as_json), ctx.obj.client() as client:
        page = client.webhook_deliveries(webhook_id, limit=limit, cursor=cursor, status=status)
    if as_json:
        emit_json(page)
        return
    table = Table("event", "type", "job", "status", "attempts", "last", "next attempt")
    for d in page.items:
        last = str(d.last_status_code) if d.last_status_code else (d.last_error or "")[:40]
        table.add_row(
            d.event_id,
            d.event_type,
            d.job_id or "",
            d.status,
            str(d.attempts),
            last,
            when(d.next_attempt_at) if d.next_attempt_at else "",
        )
    out.print(table)
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}", highlight=False)
