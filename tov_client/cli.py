"""``tov``: the ToV Select command line (typer + rich).

The API URL and key come from ``--api-url``/``--api-key`` or ``TOV_API_URL``/``TOV_API_KEY``.
Every command takes ``--json`` for machine-readable output on stdout; progress and errors go to
stderr. Exit codes: 0 ok, 1 API or connection error, 2 usage, 3 job failed or cancelled,
4 timed out waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from tov_client.client import DEFAULT_URL, Client
from tov_client.errors import ApiError, JobFailed, TovError, WaitTimeout
from tov_client.models import Dataset, Job
from tov_client.progress import STATUS_STYLE, job_progress, transfer_progress

app = typer.Typer(
    name="tov",
    help="ToV Select: choose the training data that helps your target task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Upload, register and inspect datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Create, follow and cancel selection jobs.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for scripts).")]


@dataclass
class State:
    api_url: str
    api_key: str | None
    timeout: float

    def client(self) -> Client:
        return Client(self.api_url, self.api_key, timeout=self.timeout)


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


# -- output helpers ----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout, with no markup."""
    typer.echo(json.dumps(_plain(value), indent=2, default=str))


@contextmanager
def errors_reported(as_json: bool) -> Iterator[None]:
    """Turn the client's errors into a clear message on stderr and an exit code."""
    try:
        yield
    except ApiError as exc:
        if as_json:
            typer.echo(json.dumps({"error": exc.to_dict()}, indent=2), err=True)
        else:
            err.print(f"[bold red]Error {exc.status}[/] {exc.title}: {exc.detail}", highlight=False)
            for item in exc.errors[:20]:
                where = ", ".join(f"{k} {item[k]}" for k in ("file", "line", "field") if k in item)
                err.print(f"  - {where}: {item.get('reason', '')}", highlight=False)
        raise typer.Exit(1) from exc
    except JobFailed as exc:
        if as_json:
            emit_json(exc.job)
        else:
            err.print(f"[bold red]{exc}[/]", highlight=False)
        raise typer.Exit(3) from exc
    except WaitTimeout as exc:
        if as_json:
            emit_json(exc.job)
        err.print(f"[yellow]{exc}[/]", highlight=False)
        raise typer.Exit(4) from exc
    except TovError as exc:
        err.print(f"[bold red]Error[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _datasets_table(rows: list[Dataset]) -> Table:
    table = Table("id", "name", "format", "rows", "size", "columns", "created")
    for d in rows:
        table.add_row(
            d.id,
            d.name,
            d.row_format,
            str(d.rows),
            f"{d.size_bytes:,} B",
            ", ".join(d.columns),
            _when(d.created_at),
        )
    return table


def _status(job: Job) -> str:
    return f"[{STATUS_STYLE.get(job.status, 'white')}]{job.status}[/]"


def _jobs_table(rows: list[Job]) -> Table:
    table = Table("id", "status", "stage", "progress", "method", "model", "created")
    for j in rows:
        table.add_row(
            j.id,
            _status(j),
            j.progress.stage or "",
            f"{100 * j.progress.fraction:.1f}%",
            j.method,
            j.model,
            _when(j.created_at),
        )
    return table


def _show_job(job: Job) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    p = job.progress
    eta = f", ETA {p.eta_seconds:.0f} s" if p.eta_seconds is not None else ""
    for key, value in [
        ("id", job.id),
        ("status", _status(job)),
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
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
    ]:
        table.add_row(key, value)
    if job.error:
        table.add_row("error", f"[red]{job.error.code}: {job.error.detail}[/]")
    out.print(table)


def _pairs(items: list[str] | None, option: str) -> dict[str, Any]:
    """``key=value`` options; the value is parsed as JSON when it can be (numbers, lists)."""
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got '{item}'", param_hint=option)
        try:
            parsed[key] = json.loads(raw)
        except ValueError:
            parsed[key] = raw
    return parsed


# -- datasets ----------------------------------------------------------------------------------


def _upload(client: Client, path: Path, name: str | None, quiet: bool) -> Dataset:
    if quiet:
        return client.upload_dataset(path, name=name)
    with transfer_progress(f"upload {path.name}", console=err) as show:
        return client.upload_dataset(path, name=name, on_progress=show)


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL file.")],
    name: Annotated[str | None, typer.Option(help="Name to store (default: file name).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a local JSONL file; it is validated row by row."""
    with errors_reported(as_json), ctx.obj.client() as client:
        dataset = _upload(client, path, name, quiet=as_json)
    if as_json:
        emit_json(dataset)
    else:
        out.print(_datasets_table([dataset]))


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
    if as_json:
        emit_json(dataset)
    else:
        out.print(_datasets_table([dataset]))


@datasets_app.command("list")
def datasets_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List your datasets, newest first."""
    with errors_reported(as_json), ctx.obj.client() as client:
        rows = client.list_datasets()
    if as_json:
        emit_json(rows)
    else:
        out.print(_datasets_table(rows))


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, dataset_id: str, as_json: JsonOpt = False) -> None:
    """Show one dataset."""
    with errors_reported(as_json), ctx.obj.client() as client:
        dataset = client.get_dataset(dataset_id)
    if as_json:
        emit_json(dataset)
    else:
        out.print(_datasets_table([dataset]))


# -- jobs --------------------------------------------------------------------------------------


def _dataset_ref(client: Client, value: str, quiet: bool) -> str:
    """A dataset id or a server file:// path as is; an existing local file is uploaded first."""
    if value.startswith(("ds_", "file://")):
        return value
    path = Path(value)
    if path.is_file():
        return _upload(client, path, None, quiet).id
    raise typer.BadParameter(
        f"'{value}' is neither a dataset id (ds_...), a file:// path on the server, "
        "nor a local file"
    )


def _follow(
    client: Client, job_id: str, timeout: float | None, interval: float, quiet: bool
) -> Job:
    if quiet:
        return client.wait(job_id, timeout=timeout, poll_interval=interval)
    with job_progress(console=err) as show:
        return client.wait(job_id, on_progress=show, timeout=timeout, poll_interval=interval)


@jobs_app.command("create")
def jobs_create(
    ctx: typer.Context,
    pool: Annotated[
        str, typer.Option(help="Dataset id, server file:// path, or a local file (uploaded first).")
    ],
    validation: Annotated[
        list[str],
        typer.Option(
            help="Same forms as --pool: the target examples. Repeat it (2 to 16 times) for a "
            "multi-target job: one pool scored for each validation set, targets 0, 1, ... in "
            "the order given."
        ),
    ],
    model: Annotated[str | None, typer.Option(help="Model name on the server.")] = None,
    budget: Annotated[float | None, typer.Option(help="Rows to select, or a fraction < 1.")] = None,
    strategy: Annotated[str | None, typer.Option(help="score+random | score-only")] = None,
    num_bins: Annotated[int | None, typer.Option(help="Length bins for selection.")] = None,
    method: Annotated[str | None, typer.Option(help="tov | random | uncertainty | less")] = None,
    task: Annotated[str | None, typer.Option(help="causal_lm | token_classification")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per example.")] = None,
    tov: Annotated[
        list[str] | None,
        typer.Option("--tov", help="A ToV knob as KEY=VALUE (rounds=2, lora={...}); repeatable."),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", "-m", help="KEY=VALUE stored with the job; repeatable."),
    ] = None,
    params: Annotated[
        str | None, typer.Option(help="Extra job fields as a JSON object, or @file.json.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Reuse to make a retried create return the same job (default: random)."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after S s.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a selection job."""
    extra: dict[str, Any] = {}
    if params:
        text = Path(params[1:]).read_text() if params.startswith("@") else params
        try:
            extra = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--params") from exc
        if not isinstance(extra, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--params")
    tov_params = {**extra.pop("tov", {}), **_pairs(tov, "--tov")}
    selection = dict(extra.pop("selection", {}))
    if num_bins is not None:
        selection["num_bins"] = num_bins
    meta = {**extra.pop("metadata", {}), **_pairs(metadata, "--metadata")}
    with errors_reported(as_json), ctx.obj.client() as client:
        refs = [_dataset_ref(client, v, as_json) for v in validation]
        job = client.create_job(
            _dataset_ref(client, pool, as_json),
            refs[0] if len(refs) == 1 else None,
            targets=refs if len(refs) > 1 else None,
            model=model,
            budget=budget,
            strategy=strategy,
            method=method,
            task=task,
            seed=seed,
            max_length=max_length,
            tov=tov_params or None,
            selection=selection or None,
            metadata=meta or None,
            idempotency_key=idempotency_key,
            **extra,
        )
        if not as_json:
            err.print(f"created [bold]{job.id}[/] ({job.status})", highlight=False)
        if wait:
            job = _follow(client, job.id, timeout, 1.0, quiet=as_json)
    if as_json:
        emit_json(job)
    else:
        _show_job(job)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="queued|running|succeeded|failed|cancelled")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", "-m", help="Only jobs whose metadata KEY equals VALUE; repeatable."
        ),
    ] = None,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    filters = {k: str(v) for k, v in _pairs(metadata, "--metadata").items()}
    with errors_reported(as_json), ctx.obj.client() as client:
        page = client.list_jobs(limit=limit, cursor=cursor, status=status, metadata=filters)
    if as_json:
        emit_json(page)
        return
    out.print(_jobs_table(page.items))
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}", highlight=False)


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: str,
    events: Annotated[bool, typer.Option("--events", help="Also list the job's events.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a job's status, progress and parameters."""
    with errors_reported(as_json), ctx.obj.client() as client:
        job = client.get_job(job_id)
        history = client.job_events(job_id) if events else []
    if as_json:
        data = job.model_dump(mode="json")
        if events:
            data["events"] = [e.model_dump(mode="json") for e in history]
        emit_json(data)
        return
    _show_job(job)
    if events:
        table = Table("at", "kind", "attempt", "message")
        for e in history:
            table.add_row(_when(e.at), e.kind, str(e.attempt), e.message)
        out.print(table)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a job (a running job stops at its next batch)."""
    with errors_reported(as_json), ctx.obj.client() as client:
        job = client.cancel_job(job_id)
    if as_json:
        emit_json(job)
    else:
        out.print(f"{job.id}: {_status(job)}", highlight=False)


@jobs_app.command("wait")
def jobs_wait(
    ctx: typer.Context,
    job_id: str,
    timeout: Annotated[float | None, typer.Option(help="Give up after S seconds (exit 4).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Follow a job with a progress bar until it ends (exit 3 if it failed or was cancelled)."""
    with errors_reported(as_json), ctx.obj.client() as client:
        job = _follow(client, job_id, timeout, interval, quiet=as_json)
    if as_json:
        emit_json(job)
    else:
        _show_job(job)


# -- results -----------------------------------------------------------------------------------


@app.command("download")
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
    as_json: JsonOpt = False,
) -> None:
    """Download a succeeded job's selection, scores or selected rows."""
    if what not in ("selection", "scores", "subset"):
        raise typer.BadParameter("selection | scores | subset", param_hint="--what")
    if fmt not in ("jsonl", "csv", "parquet"):
        raise typer.BadParameter("jsonl | csv | parquet", param_hint="--format")
    with errors_reported(as_json), ctx.obj.client() as client:
        kwargs: dict[str, Any] = {
            "format": fmt,
            "dest": output,
            "selection_id": selection_id,
            "target": target,
        }
        if as_json:
            path = client.download(job_id, what, **kwargs)  # type: ignore[arg-type]
        else:
            with transfer_progress(f"{what}.{fmt}", console=err) as show:
                path = client.download(job_id, what, on_progress=show, **kwargs)  # type: ignore[arg-type]
    if as_json:
        written = {"path": str(path), "bytes": path.stat().st_size, "what": what, "format": fmt}
        emit_json(written if target is None else {**written, "target": target})
    else:
        out.print(f"wrote {path} ({path.stat().st_size:,} bytes)", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
