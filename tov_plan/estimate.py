"""A job's dry run: rows and tokens counted with the model's tokenizer, the passes planned, the
pool-cache hits, the predicted wall time on a device class and the predicted peak memory.

One function for the API (`POST /v1/jobs` with `"dry_run": true`) and the engine CLI
(`tov-select ... --dry-run`); neither loads weights nor queues work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tov_plan.cache import base_key, cached_rounds, ml_versions, pool_key, published
from tov_plan.cost import DeviceClass, device_class, model_dims, predict_seconds
from tov_plan.memory import GIB, Advice, Workload, estimate_peak_memory
from tov_plan.plan import JobSettings, Plan, plan_job
from tov_plan.rules import DEFAULT_LEARNING_RATE
from tov_plan.tokens import SetCounts, TokenCounter, count_file


@dataclass(frozen=True)
class DryRunInputs:
    """What a dry run reads: local files, the model folder, the settings, where to look."""

    model_dir: Path
    pool_path: Path
    validation_paths: list[Path]  # one per target
    settings: JobSettings
    device_class: str = "cpu"
    learning_rate: float = DEFAULT_LEARNING_RATE
    lora: dict[str, Any] = field(
        default_factory=lambda: {
            "enabled": True,
            "rank": 8,
            "alpha": 32,
            "dropout": 0.2,
            "target_modules": "all-linear",
        }
    )
    cache_dir: Path | None = None  # the workers' pool cache; None: off or not visible
    pool_sha256: str | None = None  # known already (the dataset row); else hashed here
    device_bytes: int | None = None  # memory the device offers; None: the class's


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _set_summary(c: SetCounts) -> dict[str, int]:
    return {
        "rows": c.rows,
        "tokens": c.tokens,
        "loss_tokens": c.loss_tokens,
        "truncated_rows": c.truncated,
        "rows_without_loss_tokens": c.rows_without_loss_tokens,
    }


def resolved_precision(requested: str, device: DeviceClass) -> str:
    """ "auto" as the engine resolves it on that device class."""
    if requested == "auto":
        return "bfloat16" if device.bf16_default else "float32"
    return requested


def _labels(inputs: DryRunInputs) -> list[Any] | None:
    """Token classification: the sorted tag set of the pool and the first target."""
    if inputs.settings.task != "token_classification":
        return None
    from tov_plan.tokens import read_records

    tags: set[Any] = set()
    for path in (inputs.pool_path, inputs.validation_paths[0]):
        for record in read_records(path):
            tags.update(record.get("tags", ()))
    return sorted(tags)


def _cache(
    inputs: DryRunInputs, pool: SetCounts, device: DeviceClass, precision: str, rounds: int
) -> tuple[dict[str, Any], set[int]]:
    """What the pool cache holds for this job, and the rounds whose base half it has."""
    s = inputs.settings
    info: dict[str, Any] = {"enabled": inputs.cache_dir is not None}
    if inputs.cache_dir is None:
        return info, set()
    sha = inputs.pool_sha256 or _sha256(inputs.pool_path)
    pkey = pool_key(sha, inputs.model_dir, s.max_length, s.task)
    info["pool_encoding"] = published(inputs.cache_dir, f"pools/{pkey[:40]}", pkey)
    if s.method != "tov":
        return info, set()
    versions = ml_versions()
    if versions is None:
        info["base_rounds"] = None
        info["note"] = "torch, transformers or peft is not installed here: base rounds unknown"
        return info, set()
    bkey = base_key(
        s,
        pool=pkey,
        model=inputs.model_dir,
        labels=_labels(inputs),
        device="cpu" if device.name == "cpu" else "cuda",
        precision=precision,
        learning_rate=inputs.learning_rate,
        lora=inputs.lora,
        pool_seq=pool.seq_lengths,
        versions=versions,
    )
    found = cached_rounds(inputs.cache_dir, bkey, rounds)
    info["base_rounds"] = len(found)
    return info, found


def _plan_targets(
    s: JobSettings, pool: SetCounts, vals: list[SetCounts], cached: set[int], rounds: int
) -> Plan:
    """One plan over every target: the first computes (or reuses) the base halves; the others
    reuse every base half a multi-target run shares (Method A: round 1; B: all)."""
    plan = plan_job(
        s, pool.seq_lengths, pool.loss_lengths, vals[0].seq_lengths, vals[0].loss_lengths, cached
    )
    shared = {k for k in range(rounds) if s.variant == "B" or k == 0}
    for val in vals[1:]:
        more = plan_job(
            s,
            pool.seq_lengths,
            pool.loss_lengths,
            val.seq_lengths,
            val.loss_lengths,
            cached | shared,
        )
        plan.phases.extend(more.phases)
        plan.reused_base_rounds += more.reused_base_rounds
    return plan


def _memory(
    inputs: DryRunInputs,
    config: dict[str, Any],
    plan: Plan,
    device: DeviceClass,
    precision: str,
    labels: int,
    longest: int,
) -> dict[str, Any]:
    s = inputs.settings
    workload = Workload(
        model_config=config,
        task=s.task,
        num_labels=labels,
        method=s.method,
        precision=precision,
        lora_rank=s.lora_rank if s.lora else None,
        lora_target_modules=_targets(inputs.lora.get("target_modules", "all-linear")),
        batch_size=s.batch_size,
        train_tokens_per_micro_batch=s.train_tokens_per_micro_batch,
        score_tokens_per_batch=s.tokens_per_batch,
        max_length=s.max_length,
        gradient_checkpointing=s.gradient_checkpointing,
        device_type="cpu" if device.name == "cpu" else "cuda",
        less_projection_dim=s.less_projection_dim,
        less_epochs=s.less_epochs,
    )
    est = estimate_peak_memory(sized_by_plan(workload, plan, longest))
    available = inputs.device_bytes or device.memory_bytes
    return {
        "peak_bytes": est.peak_bytes,
        "peak_gib": round(est.peak_bytes / GIB, 3),
        "phase": est.phase,
        "parts": est.parts,
        "device_bytes": available,
        "fits": est.peak_bytes <= available,
        "advice": [_advice(a, s) for a in est.advice[:3]],
    }


def _longest(pool: SetCounts, vals: list[SetCounts]) -> int:
    """The longest row's tokens (after truncation) over the pool and the validation sets."""
    return max(int(c.seq_lengths.max(initial=1)) for c in [pool, *vals])


def sized_by_plan(workload: Workload, plan: Plan, longest: int) -> Workload:
    """`workload` with its batches as wide as the plan's widest (training and scoring) and its
    rows as long as the longest real row, instead of the worst case of rows at max_length."""
    train = max((p.widest for p in plan.phases if p.backward), default=1)
    score = max((p.widest for p in plan.phases if not p.backward), default=1)
    return replace(
        workload,
        train_tokens_per_micro_batch=max(1, train),
        score_tokens_per_batch=max(1, score),
        max_length=max(2, min(workload.max_length, longest)),
    )


def measured_workload(
    workload: Workload,
    settings: JobSettings,
    *,
    model_dir: Path,
    pool_path: Path,
    validation_paths: list[Path],
) -> Workload:
    """`workload` sized by the job's real rows: both files counted with the model's tokenizer
    and the job's passes planned (as the dry run does), without loading any weights."""
    counter = TokenCounter(model_dir)
    cap = settings.max_length
    pool = count_file(counter, pool_path, task=settings.task, max_length=cap)
    vals = [count_file(counter, p, task=settings.task, max_length=cap) for p in validation_paths]
    probe = plan_job(
        settings, pool.seq_lengths, pool.loss_lengths, vals[0].seq_lengths, vals[0].loss_lengths
    )
    plan = _plan_targets(settings, pool, vals, set(), probe.rounds)
    return sized_by_plan(workload, plan, _longest(pool, vals))


def _advice(a: Advice, s: JobSettings) -> dict[str, Any]:
    """One knob that lowers the peak, with the job's own setting as `now` (the memory model saw
    the largest batch the data makes, which may be smaller than the setting)."""
    configured = {
        "tov.tokens_per_batch": s.tokens_per_batch,
        "tov.train_tokens_per_micro_batch": s.train_tokens_per_micro_batch,
        "max_length": s.max_length,
    }
    now = configured.get(a.knob, a.now)
    words = a.words() if a.knob not in configured else f"lower {a.knob} (now {now}) to {a.to}"
    return {"knob": a.knob, "now": now, "to": a.to, "saves_bytes": a.saves_bytes, "words": words}


def _targets(value: Any) -> str | tuple[str, ...]:
    return tuple(value) if isinstance(value, list | tuple) else str(value)


def _weight_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) or sum(
        p.stat().st_size for p in model_dir.glob("*.bin")
    )


def dry_run(inputs: DryRunInputs) -> dict[str, Any]:
    """The estimate of one job (a JSON-ready dict; docs/api.md shows one).

    Raises:
        ValueError (TokenCountError among them): a setting the engine would refuse, a row the
            tokenizer cannot encode, a model config without the sizes; the message says which.
    """
    s = inputs.settings
    device = device_class(inputs.device_class)
    precision = resolved_precision(s.precision, device)
    counter = TokenCounter(inputs.model_dir)
    pool = count_file(counter, inputs.pool_path, task=s.task, max_length=s.max_length)
    vals = [
        count_file(counter, p, task=s.task, max_length=s.max_length)
        for p in inputs.validation_paths
    ]
    probe = plan_job(
        s, pool.seq_lengths, pool.loss_lengths, vals[0].seq_lengths, vals[0].loss_lengths
    )
    cache, cached = _cache(inputs, pool, device, precision, probe.rounds)
    plan = _plan_targets(s, pool, vals, cached, probe.rounds)
    if cache.get("enabled") and s.method == "tov":
        cache["base_rounds_reused"] = plan.reused_base_rounds
    config = json.loads((inputs.model_dir / "config.json").read_text(encoding="utf-8"))
    dims = model_dims(
        config,
        task=s.task,
        lora_rank=s.lora_rank if s.lora else None,
        target_modules=_targets(inputs.lora.get("target_modules", "all-linear")),
    )
    encode = sum(v.tokens for v in vals) + (0 if cache.get("pool_encoding") else pool.tokens)
    seconds = predict_seconds(
        dims,
        plan,
        device,
        precision=precision,
        weight_file_bytes=_weight_bytes(inputs.model_dir),
        tokens_to_encode=encode,
        recompute=s.gradient_checkpointing,
        method=s.method,
        less_projection_dim=s.less_projection_dim,
    )
    labels = len(_labels(inputs) or []) if s.task == "token_classification" else 0
    memory = (
        _memory(inputs, config, plan, device, precision, labels, _longest(pool, vals))
        if s.method != "random"
        else {"peak_bytes": 0, "fits": True, "note": "no model is loaded"}
    )
    totals = plan.totals()
    return {
        "device_class": device.name,
        "device": device.description,
        "precision": precision,
        "rows": {
            "pool": pool.rows,
            "validation": [v.rows for v in vals] if len(vals) > 1 else vals[0].rows,
            "budget": plan.budget,
            "base_size": plan.base_size,
            "rounds": plan.rounds,
        },
        "tokens": {
            "pool": _set_summary(pool),
            "validation": [_set_summary(v) for v in vals]
            if len(vals) > 1
            else _set_summary(vals[0]),
            "counted_with": f"{inputs.model_dir.name}/tokenizer.json",
        },
        "passes": {
            **totals,
            "phases": [
                {
                    "name": p.name,
                    "backward": p.backward,
                    "runs": p.passes,
                    "rows": p.rows,
                    "batches": p.batches,
                    "tokens": p.tokens,
                    "loss_tokens": p.loss_tokens,
                }
                for p in plan.phases
            ],
        },
        "pool_cache": cache,
        "time": {
            "seconds": round(seconds["total"], 1),
            "parts": {k: round(v, 2) for k, v in seconds.items() if k != "total"},
            "calibration": device.calibrated,
        },
        "memory": memory,
        "fits": bool(memory["fits"]),
        "notes": plan.notes,
    }


def lengths_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two per-row token counts agree (a helper for the accuracy checks)."""
    return len(a) == len(b) and bool(np.array_equal(a, b))
