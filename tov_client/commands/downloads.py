"""``tov download``: a succeeded job's selection, scores or selected rows, to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer

from tov_client.commands.common import JsonOpt, emit_json, err, errors_reported, out
from tov_client.models import ResultKind
from tov_client.progress import transfer_progress


def download(
    ctx: typer.Context,
    job_id: str,
    what: Annotated[
        str,
        typer.Option(
            help="selection (index, score, source) | scores (every row) | subset (the rows)"
        ),
    ] = "selection",
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv | parquet")] = "jsonl",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File or folder (default: the server's file name here)."
        ),
    ] = None,
    selection_id: Annotated[str | None, typer.Option(help="A re-selection (sel_...).")] = None,
    target: Annotated[
        int | None,
        typer.Option(min=0, help="Which target of a multi-target job, 0-based (default 0)."),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="selection, scores: add each row's loss before/after, length bin and rank in it "
            "(a selection: also why it was picked)",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a succeeded job's selection, scores or selected rows."""
    if what not in ("selection", "scores", "subset"):
        raise typer.BadParameter("selection | scores | subset", param_hint="--what")
    if fmt not in ("jsonl", "csv", "parquet"):
        raise typer.BadParameter("jsonl | csv | parquet", param_hint="--format")
    kind = cast(ResultKind, what)
    with errors_reported(as_json), ctx.obj.client() as client:
        kwargs: dict[str, Any] = {
            "format": fmt,
            "dest": output,
            "selection_id": selection_id,
            "target": target,
            "explain": explain,
        }
        if as_json:
            path = client.download(job_id, kind, **kwargs)
        else:
            with transfer_progress(f"{what}.{fmt}", console=err) as show:
                path = client.download(job_id, kind, on_progress=show, **kwargs)
    if as_json:
        written = {"path": str(path), "bytes": path.stat().st_size, "what": what, "format": fmt}
        emit_json(written if target is None else {**written, "target": target})
    else:
        out.print(f"wrote {path} ({path.stat().st_size:,} bytes)", highlight=False)
