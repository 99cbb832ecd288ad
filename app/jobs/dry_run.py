"""`POST /v1/jobs` with `"dry_run": true`: what a job would cost, without a job.

The body gets the checks of a real create (the schema, the model, each dataset reference as its
tenant may read it); then tov_plan counts the rows' tokens with the model's own tokenizer,
plans the passes, looks in the workers' pool cache and predicts the wall time on the configured
device class (`TOV_DEVICE_CLASS`) and the peak memory. Nothing is written and nothing is queued:
no job row, no dataset row, no task. Counting runs in the request (a few seconds for 100k rows);
docs/engine.md says why it is not a worker task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.catalog.inventory import find_model
from app.catalog.service import require_known_model
from app.core.artifacts import local_dataset
from app.core.config import Settings
from app.core.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from app.core.models import DatasetStatus, Tenant
from app.datasets.references import failed_detail, is_local
from app.datasets.service import end_transaction, get_dataset, prepare_reference
from app.datasets.sources.registry import is_remote
from app.jobs.schemas import JobCreate
from tov_plan.estimate import DryRunInputs, dry_run
from tov_plan.plan import JobSettings, settings_of
from tov_plan.tokens import TokenCountError


def _local_file(
    session: Session, settings: Settings, tenant: Tenant, ref: str, field_name: str
) -> tuple[Path, str | None]:
    """A reference as a local file and its SHA-256 when known, with the checks of a real
    create; nothing is registered (a file:// path is validated in place, not added)."""
    try:
        return _resolve(session, settings, tenant, ref)
    except (NotFound, InvalidInput, Conflict) as exc:  # name the field, as a real create does
        raise type(exc)(f"{field_name}: {exc.detail}", errors=exc.errors) from exc


def _resolve(
    session: Session, settings: Settings, tenant: Tenant, ref: str
) -> tuple[Path, str | None]:
    if ref.startswith("ds_"):  # the tenant's own only: another tenant's id is a 404
        dataset = get_dataset(session=session, tenant=tenant, dataset_id=ref)
        if dataset.status == DatasetStatus.FAILED:
            raise InvalidInput(failed_detail(dataset), errors=dataset.errors)
        if dataset.status == DatasetStatus.VALIDATING:
            raise Conflict(
                f"dataset '{ref}' is still being validated; a dry run needs its rows: retry "
                "once GET /v1/datasets/{id} says `ready`"
            )
        return local_dataset(dataset.uri, dataset.sha256, settings), dataset.sha256
    if is_local(ref):  # under the tenant's data roots, every row checked, as a real create
        prepared = prepare_reference(
            ref, settings=settings, tenant=tenant, name=None, check_quota=lambda _: None
        )
        return Path(prepared.uri), prepared.summary.sha256
    if is_remote(ref):
        raise InvalidInput(
            f"'{ref[:200]}' is a remote reference: a dry run reads only registered datasets "
            "(ds_...) and file:// paths and fetches nothing; register it with POST "
            "/v1/datasets first, then dry-run with its id"
        )
    raise InvalidInput(
        f"'{ref[:200]}' is neither a dataset id (ds_...), a file:// path nor an https://, "
        "s3:// or hf:// reference."
    )


def job_settings(body: JobCreate, device_class: str) -> JobSettings:
    """The knobs of the body as tov_plan reads them; knobs the body does not have take the
    engine's defaults ("auto" gradient checkpointing: on with a GPU, off on CPU)."""
    return settings_of(body, device_class)


def estimate(
    *, session: Session, settings: Settings, tenant: Tenant, body: JobCreate
) -> dict[str, Any]:
    """The dry run's answer for `body` (see the module docstring); 4xx as a real create."""
    name = body.model or settings.default_model
    require_known_model(name, settings)
    model_dir = find_model(name, settings.model_roots)
    if model_dir is None:
        raise ServiceUnavailable(
            "this API host cannot see the model folders (TOV_MODEL_ROOTS); a dry run reads the "
            "model's tokenizer and config.json there"
        )
    end_transaction(session)  # files are read and validated with no transaction open
    refs = [("pool", body.pool)] + [
        ("validation" if body.targets is None else f"targets[{k}]", ref)
        for k, ref in enumerate(body.target_refs())
    ]
    files = [_local_file(session, settings, tenant, ref, field) for field, ref in refs]
    lora = body.tov.lora.model_dump(mode="json")
    if isinstance(lora.get("target_modules"), list):
        lora["target_modules"] = tuple(lora["target_modules"])
    inputs = DryRunInputs(
        model_dir=model_dir,
        pool_path=files[0][0],
        validation_paths=[path for path, _ in files[1:]],
        settings=job_settings(body, settings.device_class),
        device_class=settings.device_class,
        learning_rate=body.tov.learning_rate,
        lora=lora,
        cache_dir=settings.artifact_root / "pool-cache" if settings.pool_cache else None,
        pool_sha256=files[0][1],
        device_bytes=int(settings.worker_memory_gb * (1 << 30))
        if settings.worker_memory_gb
        else None,
    )
    try:
        answer = dry_run(inputs)
    except TokenCountError as exc:
        raise InvalidInput(f"the rows cannot be tokenised as the engine would: {exc}") from exc
    except ValueError as exc:  # the engine's own refusals (budget, base_size, LESS without LoRA)
        raise InvalidInput(str(exc)) from exc
    return {"dry_run": True, "model": name, "method": body.method, **answer}
