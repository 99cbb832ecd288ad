"""A job's memory before anything loads: its Workload, the device's free memory, the check.

The formulas are tov_plan.memory's (standard library, shared with the API); this module resolves
what they need from a JobConfig and a model folder (the device, the precision policy, gradient
checkpointing), reads the device's free memory and refuses a job that cannot fit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from tov_engine.config import JobConfig
from tov_engine.errors import InsufficientMemory, ModelError
from tov_engine.model.loading import resolve_device
from tov_engine.model.precision import resolve_precision
from tov_plan.memory import (
    CUDA_CONTEXT_BYTES,
    GIB,
    MemoryEstimate,
    Workload,
    estimate_peak_memory,
    refusal_message,
)

logger = logging.getLogger(__name__)

DEFAULT_LABELS = 64  # token classification: the tag set is read with the data, later
DEFAULT_TRAIN_TOKENS = 4096  # ToVConfig.train_tokens_per_micro_batch's default


def read_model_config(model: str | Path) -> dict[str, object]:
    """The model folder's config.json as a dict."""
    path = Path(model) / "config.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ModelError(f"{path} does not hold a JSON object")
    return loaded


def checkpointing(config: JobConfig, device: torch.device) -> bool:
    """The job's gradient checkpointing, resolved: "auto" is on for CUDA, off elsewhere."""
    value = getattr(config, "gradient_checkpointing", "auto")
    if isinstance(value, bool):
        return value
    if value == "auto":
        return device.type == "cuda"
    return value == "on"


def workload_from_job(
    config: JobConfig, model: str | Path, *, num_labels: int | None = None
) -> Workload:
    """The Workload of a job on `model` (its folder), as the engine will run it."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, config.deterministic)
    tov = config.tov
    return Workload(
        model_config=read_model_config(model),
        task=config.task,
        num_labels=num_labels if num_labels is not None else DEFAULT_LABELS,
        method=config.method,
        precision=precision.name,
        lora_rank=tov.lora.rank if tov.lora.enabled else None,
        lora_target_modules=tov.lora.target_modules,
        batch_size=tov.batch_size,
        train_tokens_per_micro_batch=int(
            getattr(tov, "train_tokens_per_micro_batch", DEFAULT_TRAIN_TOKENS)
        ),
        score_tokens_per_batch=tov.tokens_per_batch,
        max_length=config.max_length,
        gradient_checkpointing=checkpointing(config, device),
        device_type="cuda" if device.type == "cuda" else "cpu",
        less_projection_dim=config.less.projection_dim,
        less_epochs=config.less.epochs,
    )


def device_label(config: JobConfig) -> str:
    """The job's device as a user reads it: "cpu" or "cuda:0"."""
    device = resolve_device(config.device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return device.type


def available_bytes(config: JobConfig, memory_gb: float | None = None) -> int:
    """Memory the job may use: `memory_gb` when given (an operator's cap); on CUDA the device's
    free memory (torch.cuda.mem_get_info); on CPU the kernel's MemAvailable."""
    if memory_gb is not None:
        return int(memory_gb * GIB)
    device = resolve_device(config.device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return mem_available()


def mem_available() -> int:
    """/proc/meminfo's MemAvailable in bytes (MemTotal where the kernel has no MemAvailable)."""
    fields: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            fields[name] = int(parts[0]) * 1024  # kB
    return fields.get("MemAvailable", fields.get("MemTotal", 0))


def check_memory(
    config: JobConfig,
    model: str | Path,
    *,
    memory_gb: float | None = None,
    num_labels: int | None = None,
    pool: str | Path | None = None,
    validation: list[str | Path] | None = None,
) -> MemoryEstimate:
    """Refuse a job its device cannot hold, before anything loads.

    The first estimate takes every row at max_length (no file is read). When that does not fit
    and the job's files are given, the rows are counted with the model's tokenizer and the
    passes planned (as the dry run does), and the job is refused only if its real batches do
    not fit either.

    Args:
        config: the job. model: its model folder.
        memory_gb: the memory the job may use, in GiB; None: what the device has free now.
        num_labels: token classification's tag set size when known.
        pool, validation: the job's pool file and validation file(s).
    Returns:
        The estimate, when the job fits.
    Raises:
        InsufficientMemory: it does not fit; the message names the need and the knobs.
        ModelError: config.json cannot be read.
        ValueError: config.json lacks what the model needs.
    """
    workload = workload_from_job(config, model, num_labels=num_labels)
    estimate = estimate_peak_memory(workload)
    have = available_bytes(config, memory_gb)
    on_cuda = resolve_device(config.device).type == "cuda" and memory_gb is None
    slack = CUDA_CONTEXT_BYTES if on_cuda else 0  # mem_get_info's free leaves out the context
    if estimate.peak_bytes - slack > have and pool is not None and validation:
        from tov_engine.dry_run import job_settings  # the dry run's settings for this config
        from tov_plan.estimate import measured_workload  # reads the files: only when needed

        bound = estimate.peak_gib
        try:
            measured = measured_workload(
                workload,
                job_settings(config, "cpu" if workload.device_type == "cpu" else "cuda"),
                model_dir=Path(model),
                pool_path=Path(pool),
                validation_paths=[Path(v) for v in validation],
            )
        except ValueError as exc:  # no tokenizer.json, a row that cannot be counted: the bound
            logger.warning("memory: rows not counted (%s); every row taken at max_length", exc)
        else:
            estimate = estimate_peak_memory(measured)
            logger.info(
                "memory: %.1f GiB with every row at max_length, %.1f GiB for the real rows",
                bound,
                estimate.peak_gib,
            )
    if estimate.peak_bytes - slack > have:
        raise InsufficientMemory(refusal_message(estimate, have, device_label(config)))
    logger.info(
        "memory: the job needs about %.1f GiB on %s, %.1f GiB available",
        estimate.peak_gib,
        device_label(config),
        have / GIB,
    )
    return estimate
