"""Rich progress bars for job waits and file transfers (used by the CLI; handy in notebooks).

>>> with job_progress() as show:
...     job = client.wait(job_id, on_progress=show)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tov_client.models import Job

STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "cancelling": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _describe(job: Job) -> str:
    stage = job.progress.stage or "-"
    style = STATUS_STYLE.get(job.status, "white")
    return f"[{style}]{job.status:>9}[/] {stage:>7}"


@contextmanager
def job_progress(console: Console | None = None) -> Iterator[Callable[[Job], None]]:
    """A progress bar following a job; yields the ``on_progress`` callback for ``wait``."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("waiting", total=1.0, rows="", eta="-")

        def update(job: Job) -> None:
            done, total = job.progress.rows_done, job.progress.rows_total
            eta = job.progress.eta_seconds
            bar.update(
                task,
                completed=1.0 if job.succeeded else job.progress.fraction,
                description=_describe(job),
                rows=f"{done}/{total} rows" if total else "",
                eta=f"{eta:.0f}s" if eta is not None else "-",
            )

        yield update


@contextmanager
def transfer_progress(
    label: str, console: Console | None = None
) -> Iterator[Callable[[int, int | None], None]]:
    """A byte-count bar for uploads and downloads; yields the ``on_progress`` callback."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
