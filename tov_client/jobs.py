"""Job requests: create (idempotently), read, list, cancel, delete, follow until done, and make
re-selections from a job's stored scores."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tov_client.errors import JobFailed, TransportError, WaitTimeout
from tov_client.models import Dataset, Job, JobEvent, JobPage, Leak, LeakPage, Selection
from tov_client.transport import Transport, drop_none, ref

EVENTS_PAGE = 100
"""Events a request in ``iter_job_events`` (the API allows up to 1000)."""

JobProgress = Callable[[Job], None]
"""Called with each polled state of a job while waiting."""


class JobsApi(Transport):
    """The ``/v1/jobs`` part of ``Client`` (results are in ``DownloadsApi``)."""

    def create_job(
        self,
        pool: str | Dataset,
        validation: str | Dataset | Sequence[str | Dataset] | None = None,
        *,
        targets: Sequence[str | Dataset] | None = None,
        model: str | None = None,
        budget: float | None = None,
        strategy: str | None = None,
        method: str | None = None,
        task: str | None = None,
        seed: int | None = None,
        max_length: int | None = None,
        precision: str | None = None,
        gradient_checkpointing: str | None = None,
        tov: Mapping[str, Any] | None = None,
        selection: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        notify_url: str | None = None,
        **extra: Any,
    ) -> Job:
        """Start a selection job (the API answers 202 with the queued job).

        ``pool`` and ``validation`` are dataset ids (or ``Dataset`` objects) or server-side
        ``file://`` paths. For a multi-target job give ``targets``, 2 to 16 validation sets
        (or a list as ``validation``): one job scores the pool for each, sharing the work that
        does not depend on the validation set; fetch target k's results with ``target=k``.
        ``budget`` (a count, or a fraction below 1) and ``strategy`` are
        shortcuts into ``selection``; ``tov`` holds the Train-on-Validation knobs;
        ``precision`` is "auto", "float32" or "bfloat16" (bf16 frozen base weights);
        ``gradient_checkpointing`` is "auto", "on" or "off" (less training memory for more
        time; the micro-batch budget is ``tov={"train_tokens_per_micro_batch": N}``). An
        ``Idempotency-Key`` (a fresh uuid4 unless given) makes the automatic retries safe:
        the server returns the same job for the same key and body. A create that gets no answer
        within the client's timeout is retried with the same key; when the retries run out the
        ``TransportError`` names the key to retry with by hand. ``notify_url`` receives the job's
        signed webhook events; the returned job's ``notify["secret"]`` verifies them (shown in
        this answer only). ``verify={"holdout": 0.25, "seeds": 2}`` (single-target jobs) holds
        that share of the validation rows out of selection and reports in ``job.verify`` the
        held-out loss of fine-tunes on the selection and on same-size random subsets.
        """
        if notify_url is not None:
            extra["notify_url"] = notify_url
        body = job_body(
            pool,
            validation,
            targets=targets,
            model=model,
            budget=budget,
            strategy=strategy,
            method=method,
            task=task,
            seed=seed,
            max_length=max_length,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            tov=tov,
            selection=selection,
            metadata=metadata,
            **extra,
        )
        return self._post_job(body, idempotency_key or str(uuid.uuid4()))

    def dry_run_job(
        self,
        pool: str | Dataset,
        validation: str | Dataset | Sequence[str | Dataset] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """What ``create_job`` with the same arguments would cost, without creating the job:
        rows and tokens (counted with the model's tokenizer), passes, pool-cache hits,
        predicted wall time and peak memory on the workers' device class, and whether it fits
        (``POST /v1/jobs`` with ``dry_run: true``; docs/api.md shows the answer)."""
        options.pop("idempotency_key", None)  # nothing is created: nothing to deduplicate
        body = job_body(pool, validation, **options)
        body["dry_run"] = True
        return dict(self._request("POST", "/v1/jobs", json=body).json())

    def _post_job(self, body: dict[str, Any], key: str) -> Job:
        """POST the job with its Idempotency-Key; a create that may have arrived but got no
        answer raises a ``TransportError`` that says how to retry it safely by hand."""
        try:
            response = self._request(
                "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key}
            )
        except TransportError as exc:
            if not exc.maybe_delivered:
                raise
            raise TransportError(
                f"{exc} To retry safely, call create_job again with the same arguments and "
                f"idempotency_key={key!r} (over HTTP: the same body with the header "
                f"'Idempotency-Key: {key}'): the server then returns the job it made, if any, "
                "instead of starting a second one.",
                maybe_delivered=True,
                idempotency_key=key,
            ) from exc
        return Job.model_validate(response.json())

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def list_jobs(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; ``metadata`` filters by exact key/value matches."""
        params: list[tuple[str, Any]] = [("limit", limit)]
        params += [(k, v) for k, v in (("cursor", cursor), ("status", status)) if v]
        params += [("metadata", f"{k}:{v}") for k, v in (metadata or {}).items()]
        return JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(self, *, page_size: int = 100, **filters: Any) -> Iterator[Job]:
        """Every job matching ``filters`` (see ``list_jobs``), following the cursor."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel_job(self, job_id: str) -> Job:
        """Ask the job to stop: a queued job is cancelled at once, a running one soon after."""
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def delete_job(self, job_id: str) -> None:
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def job_events(
        self, job_id: str, *, after: int | None = None, limit: int | None = None
    ) -> list[JobEvent]:
        """One page of the job's history, oldest first: created, claimed, stage changes,
        re-sent, succeeded, ... Only events with an ``id`` above ``after``; at most ``limit``
        (the server's default page is 100, its largest 1000). A page shorter than ``limit`` is
        the last; ``iter_job_events`` follows every page."""
        params = drop_none({"after": after, "limit": limit})
        rows = self._request("GET", f"/v1/jobs/{job_id}/events", params=params).json()
        return [JobEvent.model_validate(r) for r in rows]

    def job_leaks(
        self,
        job_id: str,
        *,
        target: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        excluded: bool | None = None,
    ) -> LeakPage:
        """One page of the pool rows the leakage check flagged (pool order): the matched
        validation or ``decontaminate_against`` row, the similarity, exact or near, and whether
        the row is excluded from selection. ``iter_job_leaks`` follows every page."""
        params = drop_none(
            {"target": target, "limit": limit, "cursor": cursor, "excluded": excluded}
        )
        response = self._request("GET", f"/v1/jobs/{job_id}/leaks", params=params)
        return LeakPage.model_validate(response.json())

    def iter_job_leaks(
        self, job_id: str, *, target: int | None = None, page_size: int = 500
    ) -> Iterator[Leak]:
        """Every leak of the job's target, page after page."""
        cursor = None
        while True:
            page = self.job_leaks(job_id, target=target, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def iter_job_events(
        self, job_id: str, *, after: int = 0, page_size: int = EVENTS_PAGE
    ) -> Iterator[JobEvent]:
        """Every event of the job after ``after``, oldest first, ``page_size`` a request. Each
        page starts after the last ``id`` of the one before, so events recorded meanwhile are
        picked up and none is repeated."""
        while True:
            page = self.job_events(job_id, after=after, limit=page_size)
            yield from page
            if len(page) < page_size or page[-1].id is None:  # the last page, or an old server
                return
            after = page[-1].id

    def wait(
        self,
        job_id: str,
        *,
        on_progress: JobProgress | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        check: bool = True,
    ) -> Job:
        """Poll until the job is succeeded, failed or cancelled and return its final state.

        ``on_progress(job)`` sees every polled state (see ``tov_client.progress`` for a rich
        progress bar). With ``check`` (the default) a failed or cancelled job raises
        ``JobFailed``; past ``timeout`` seconds ``WaitTimeout`` is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_progress:
                on_progress(job)
            if job.done:
                if check and not job.succeeded:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)
            time.sleep(poll_interval)

    def create_selection(
        self,
        job_id: str,
        *,
        budget: float,
        strategy: str | None = None,
        num_bins: int | None = None,
        seed: int | None = None,
        target: int | None = None,
    ) -> Selection:
        """Re-select from a succeeded job's stored scores (no GPU); poll ``get_selection``.
        ``target``: which target of a multi-target job (default 0)."""
        body = drop_none(
            {
                "budget": budget,
                "strategy": strategy,
                "num_bins": num_bins,
                "seed": seed,
                "target": target,
            }
        )
        response = self._request("POST", f"/v1/jobs/{job_id}/selections", json=body)
        return Selection.model_validate(response.json())

    def get_selection(self, job_id: str, selection_id: str) -> Selection:
        path = f"/v1/jobs/{job_id}/selections/{selection_id}"
        return Selection.model_validate(self._request("GET", path).json())

    def list_selections(self, job_id: str) -> list[Selection]:
        rows = self._request("GET", f"/v1/jobs/{job_id}/selections").json()
        return [Selection.model_validate(r) for r in rows]


def _split_targets(
    validation: str | Dataset | Sequence[str | Dataset] | None,
    targets: Sequence[str | Dataset] | None,
) -> tuple[str | Dataset | None, Sequence[str | Dataset] | None]:
    """(validation, targets) with exactly one set: a list given as ``validation`` is the
    targets, and a list of one is a plain single-target job."""
    if isinstance(validation, Sequence) and not isinstance(validation, str):
        if targets is not None:
            raise TypeError("give the validation sets as `validation` or `targets`, not both")
        targets = list(validation)
        validation = None
        if len(targets) == 1:  # one validation set is a plain job
            validation, targets = targets[0], None
    if (validation is None) == (targets is None):
        raise TypeError("give exactly one of `validation` or `targets`")
    return validation, targets


def job_body(
    pool: str | Dataset,
    validation: str | Dataset | Sequence[str | Dataset] | None = None,
    *,
    targets: Sequence[str | Dataset] | None = None,
    budget: float | None = None,
    strategy: str | None = None,
    tov: Mapping[str, Any] | None = None,
    selection: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` (``create_job``'s arguments; None leaves a field out)."""
    validation, targets = _split_targets(validation, targets)
    chosen = dict(selection or {})
    chosen.update(drop_none({"budget": budget, "strategy": strategy}))
    known = ("model", "method", "task", "seed", "max_length", "precision", "gradient_checkpointing")
    body = drop_none(
        {
            "pool": ref(pool),
            "validation": None if validation is None else ref(validation),
            "targets": None if targets is None else [ref(t) for t in targets],
            **{name: fields.pop(name, None) for name in known},
            "tov": dict(tov) if tov else None,
            "selection": chosen or None,
            "metadata": dict(metadata) if metadata else None,
        }
    )
    decontaminate = fields.pop("decontaminate_against", None)
    if decontaminate:  # datasets no selected row may repeat (the leakage check)
        body["decontaminate_against"] = [ref(d) for d in decontaminate]
    body.update(fields)
    return body
