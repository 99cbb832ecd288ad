"""``tov jobs harmful`` and ``tov jobs leaks``: what a finished job found in the pool."""

from __future__ import annotations

from typing import Annotated

import typer

from tov_client.commands.common import JsonOpt, emit_json, err, errors_reported, out
from tov_client.commands.job_views import harmful_table, leaks_table


def jobs_harmful(
    ctx: typer.Context,
    job_id: str,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most N rows.")] = 20,
    target: Annotated[
        int | None, typer.Option(min=0, help="Which target of a multi-target job (default 0).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The pool rows whose loss rose most when the model was nudged toward the target."""
    with errors_reported(as_json), ctx.obj.client() as client:
        rows = client.harmful_rows(job_id, limit=limit, target=target)
    if as_json:
        emit_json(rows)
        return
    out.print(harmful_table(rows))
    if not rows.explained:
        err.print("this job stored no losses (a method without them, or an older job)")


def jobs_leaks(
    ctx: typer.Context,
    job_id: str,
    target: Annotated[
        int | None, typer.Option(min=0, help="Which target of a multi-target job (default 0).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most N rows.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Pool rows that repeat a validation or --decontaminate-against row (exact or near)."""
    with errors_reported(as_json), ctx.obj.client() as client:
        rows = []
        for leak in client.iter_job_leaks(job_id, target=target, page_size=min(limit, 1000)):
            rows.append(leak)
            if len(rows) >= limit:
                break
    if as_json:
        emit_json(rows)
        return
    out.print(leaks_table(rows))
    excluded = sum(1 for r in rows if r.excluded)
    err.print(f"{len(rows)} leak(s) shown, {excluded} excluded from selection", highlight=False)
