"""How ``tov jobs`` shows jobs: a table of many, the details of one, its events."""

from __future__ import annotations

import json

from rich.table import Table

from tov_client.commands.common import out, status_markup, when
from tov_client.models import HarmfulRows, Job, JobEvent, Leak, Verify


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
    if job.verify is not None:
        table.add_row("verify", verify_text(job.verify))
    if job.leak_count:
        table.add_row("leaks", f"{job.leak_count} pool rows (tov jobs leaks {job.id})")
    if job.error:
        table.add_row("error", f"[red]{job.error.code}: {job.error.detail}[/]")
    out.print(table)


def verify_text(v: Verify) -> str:
    """The verification in one or two lines: the held-out losses and the improvement."""
    asked = f"holdout {v.holdout:g}, {v.seeds} seed{'s' if v.seeds != 1 else ''}"
    if v.error:
        return f"{asked}: [red]{v.error}[/]"
    if not v.reported:
        return f"{asked}: pending"
    return (
        f"{asked}, {v.holdout_rows} held-out rows: base loss {v.base_loss:.4f}, "
        f"selected {v.selected_loss:.4f}, random {v.random_loss:.4f}\n"
        f"improvement over random {v.improvement:+.4f} ± {v.improvement_sd:.4f} "
        f"({v.improvement_percent:+.2f}%)"
    )


def show_events(history: list[JobEvent]) -> None:
    table = Table("id", "at", "kind", "attempt", "message")
    for e in history:
        table.add_row(
            "" if e.id is None else str(e.id), when(e.at), e.kind, str(e.attempt), e.message
        )
    out.print(table)


def harmful_table(rows: HarmfulRows) -> Table:
    """The harmful rows: index, losses before and after, the increase, selected, a preview."""
    table = Table("index", "loss before", "loss after", "increase", "selected", "preview")

    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    for r in rows.items:
        table.add_row(
            str(r.index),
            num(r.loss_before),
            num(r.loss_after),
            num(r.loss_increase),
            "yes" if r.selected else "",
            r.preview[:80],
        )
    return table


def leaks_table(rows: list[Leak]) -> Table:
    """The leaks: pool row, matched row (source, dataset, index), similarity, kind, excluded."""
    table = Table("pool row", "source", "dataset", "row", "similarity", "kind", "excluded")
    table.add_column("pool text")
    for r in rows:
        table.add_row(
            str(r.pool_index),
            r.source,
            r.dataset,
            str(r.match_index),
            f"{r.similarity:.3f}",
            r.kind,
            "yes" if r.excluded else "",
            r.pool_preview[:60],
        )
    return table
