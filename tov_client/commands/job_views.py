"""How ``tov jobs`` shows jobs: a table of many, the details of one, its events."""

from __future__ import annotations

import json

from rich.table import Table

from tov_client.commands.common import out, status_markup, when
from tov_client.models import Job, JobEvent


def jobs_table(rows: list[Job]) -> Table:
    table = Table("id", "status", "stage", "progress", "method", "model", "created")
    for j in rows:
        table.add_row(
            j.id,
            status_markup(j),
            j.progress.stage or "",
            f"{100 * j.progress.fraction:.1f}%",
            j.method,
            j.model,
            when(j.created_at),
        )
    return table


def show_job(job: Job) -> None:
    """Print one job's status, progress, inputs, parameters and error as a two-column table."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    p = job.progress
    eta = f", ETA {p.eta_seconds:.0f} s" if p.eta_seconds is not None else ""
    for key, value in [
        ("id", job.id),
        ("status", status_markup(job)),
        ("stage", p.stage or ""),
        ("progress", f"{100 * p.fraction:.1f}% ({p.rows_done}/{p.rows_total} rows{eta})"),
        ("message", p.message or ""),
        ("pool", job.pool),
        *(
            [("validation", job.validation)]
            if job.k <= 1
            else [("targets", ", ".join(f"{k}: {t}" for k, t in enumerate(job.targets)))]
        ),
        ("model", job.model),
        ("method", f"{job.method} ({job.task})"),
        ("params", json.dumps(job.params)),
        ("metadata", json.dumps(job.metadata)),
        ("attempt", str(job.attempt)),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]:
        table.add_row(key, value)
    if job.error:
        table.add_row("error", f"[red]{job.error.code}: {job.error.detail}[/]")
    out.print(table)


def show_events(history: list[JobEvent]) -> None:
    table = Table("id", "at", "kind", "attempt", "message")
    for e in history:
        table.add_row(
            "" if e.id is None else str(e.id), when(e.at), e.kind, str(e.attempt), e.message
        )
    out.print(table)
