"""``tov jobs``: create, list, show, cancel and follow selection jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tov_client.client import Client
from tov_client.commands.common import (
    JsonOpt,
    emit_json,
    err,
    errors_reported,
    out,
    pairs,
    status_markup,
)
from tov_client.commands.datasets import upload
from tov_client.commands.dry_run_view import show_estimate
from tov_client.commands.job_findings import jobs_harmful, jobs_leaks
from tov_client.commands.job_views import (
    jobs_table,
    show_events,
    show_job,
)
from tov_client.models import Job
from tov_client.progress import job_progress

jobs_app = typer.Typer(help="Create, follow and cancel selection jobs.", no_args_is_help=True)


def _dataset_ref(client: Client, value: str, quiet: bool) -> str:
    """A dataset id or a server file:// path as is; an existing local file is uploaded first."""
    if value.startswith(("ds_", "file://")):
        return value
    path = Path(value)
    if path.is_file():
        return upload(client, path, None, quiet).id
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


def _extra_fields(params: str | None) -> dict[str, Any]:
    """``--params``: a JSON object, inline or ``@file.json``."""
    if not params:
        return {}
    text = Path(params[1:]).read_text() if params.startswith("@") else params
    try:
        extra = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--params") from exc
    if not isinstance(extra, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--params")
    return extra


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
    model: Annotated[
        str | None, typer.Option(help="Model name on the server (see `tov models`).")
    ] = None,
    budget: Annotated[float | None, typer.Option(help="Rows to select, or a fraction < 1.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="score+random | score-only | score+diverse")
    ] = None,
    num_bins: Annotated[int | None, typer.Option(help="Length bins for selection.")] = None,
    method: Annotated[
        str | None, typer.Option(help="tov | random | uncertainty | less | rds")
    ] = None,
    task: Annotated[str | None, typer.Option(help="causal_lm | token_classification")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per example.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto | float32 | bfloat16: bf16 frozen base weights (LoRA weights and the "
            "scores stay float32); auto picks bfloat16 on a GPU that supports it."
        ),
    ] = None,
    gradient_checkpointing: Annotated[
        str | None,
        typer.Option(
            help="auto | on | off: recompute activations in the backward (less training "
            "memory, about a third more training time); auto: on with a GPU."
        ),
    ] = None,
    train_tokens_per_micro_batch: Annotated[
        int | None,
        typer.Option(
            help="Padded tokens per training micro-batch (the tov knob of that name): larger "
            "batches accumulate gradients over several, for the same update in less memory."
        ),
    ] = None,
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
    decontaminate_against: Annotated[
        list[str] | None,
        typer.Option(
            "--decontaminate-against",
            help="Same forms as --pool: a dataset (e.g. your test set) no selected row may "
            "repeat, exactly or nearly; repeatable. See `tov jobs leaks`.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Create nothing: show the job's rows, tokens, passes, pool-cache hits, "
            "predicted wall time and peak memory on the workers' device, and whether it fits.",
        ),
    ] = False,
    notify_url: Annotated[
        str | None,
        typer.Option(
            "--notify-url",
            help="An https:// receiver for this job's signed webhook events (job.succeeded, "
            "job.failed, job.cancelled, selection.succeeded); its secret is printed once.",
        ),
    ] = None,
    verify_holdout: Annotated[
        float | None,
        typer.Option(
            "--verify-holdout",
            help="Verify the selection: hold this share of the validation rows out of "
            "selection (e.g. 0.25), then compare fresh fine-tunes on the selection and on "
            "same-size random subsets on the held-out rows. Single-target jobs.",
        ),
    ] = None,
    verify_seeds: Annotated[
        int | None,
        typer.Option(
            "--verify-seeds", help="With --verify-holdout: fine-tuning seeds per arm (default 2)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a selection job (or, with --dry-run, estimate one)."""
    extra = _extra_fields(params)
    if verify_holdout is not None:
        extra["verify"] = {"holdout": verify_holdout}
        if verify_seeds is not None:
            extra["verify"]["seeds"] = verify_seeds
    elif verify_seeds is not None:
        raise typer.BadParameter("needs --verify-holdout", param_hint="--verify-seeds")
    tov_params = {**extra.pop("tov", {}), **pairs(tov, "--tov")}
    if train_tokens_per_micro_batch is not None:
        tov_params["train_tokens_per_micro_batch"] = train_tokens_per_micro_batch
    selection = dict(extra.pop("selection", {}))
    if num_bins is not None:
        selection["num_bins"] = num_bins
    meta = {**extra.pop("metadata", {}), **pairs(metadata, "--metadata")}
    with errors_reported(as_json), ctx.obj.client() as client:
        refs = [_dataset_ref(client, v, as_json) for v in validation]
        if decontaminate_against:
            extra["decontaminate_against"] = [
                _dataset_ref(client, v, as_json) for v in decontaminate_against
            ]
        spec: dict[str, Any] = {
            "targets": refs if len(refs) > 1 else None,
            "model": model,
            "budget": budget,
            "strategy": strategy,
            "method": method,
            "task": task,
            "seed": seed,
            "max_length": max_length,
            "precision": precision,
            "gradient_checkpointing": gradient_checkpointing,
            "tov": tov_params or None,
            "selection": selection or None,
            **extra,
        }
        pool_ref = _dataset_ref(client, pool, as_json)
        validation_ref = refs[0] if len(refs) == 1 else None
        if dry_run:
            estimate = client.dry_run_job(pool_ref, validation_ref, **spec)
            if as_json:
                emit_json(estimate)
            else:
                show_estimate(estimate)
            return
        if notify_url:
            spec["notify_url"] = notify_url
        job = client.create_job(
            pool_ref,
            validation_ref,
            metadata=meta or None,
            idempotency_key=idempotency_key,
            **spec,
        )
        if not as_json:
            err.print(f"created [bold]{job.id}[/] ({job.status})", highlight=False)
            if job.notify and job.notify.get("secret"):  # shown in this answer only
                err.print(
                    f"notify_url signing secret (shown once): {job.notify['secret']}",
                    highlight=False,
                    soft_wrap=True,  # one line, to copy whole
                )
        if wait:
            job = _follow(client, job.id, timeout, 1.0, quiet=as_json)
    if as_json:
        emit_json(job)
    else:
        show_job(job)


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
    filters = {k: str(v) for k, v in pairs(metadata, "--metadata").items()}
    with errors_reported(as_json), ctx.obj.client() as client:
        page = client.list_jobs(limit=limit, cursor=cursor, status=status, metadata=filters)
    if as_json:
        emit_json(page)
        return
    out.print(jobs_table(page.items))
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
        history = list(client.iter_job_events(job_id)) if events else []
    if as_json:
        data = job.model_dump(mode="json")
        if events:
            data["events"] = [e.model_dump(mode="json") for e in history]
        emit_json(data)
        return
    show_job(job)
    if events:
        show_events(history)


@jobs_app.command("events")
def jobs_events(
    ctx: typer.Context,
    job_id: str,
    after: Annotated[int, typer.Option(min=0, help="Only events with an id above this.")] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, max=1000, help="One page of N (default: every event).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a job's events, oldest first: all of them, or one page with --after/--limit."""
    with errors_reported(as_json), ctx.obj.client() as client:
        if limit is None:
            history = list(client.iter_job_events(job_id, after=after))
        else:
            history = client.job_events(job_id, after=after, limit=limit)
    if as_json:
        emit_json(history)
        return
    show_events(history)
    if limit is not None and len(history) == limit and history[-1].id is not None:
        err.print(f"more: --after {history[-1].id}", highlight=False)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a job (a running job stops at its next batch)."""
    with errors_reported(as_json), ctx.obj.client() as client:
        job = client.cancel_job(job_id)
    if as_json:
        emit_json(job)
    else:
        out.print(f"{job.id}: {status_markup(job)}", highlight=False)


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
        show_job(job)


jobs_app.command("harmful")(jobs_harmful)
jobs_app.command("leaks")(jobs_leaks)
