"""Predicted wall time of a job: FLOPs of its planned passes over an effective FLOP/s per device
class, plus the fixed costs (start, weights, tokenising).

FLOPs per token of a forward: 2 x the body's weights (attention and MLP projections, plus the
LoRA branches) + the attention scores (2 x width x the query size, causal) + 2 x hidden x vocab
where the head runs (the engine computes the head on loss-bearing positions only). A backward
costs one more forward with LoRA (activation gradients; the frozen weights get none) and two
with full fine-tuning (activation and weight gradients). LESS adds its random projection.

Device classes (DEVICE_CLASSES): `cpu` is calibrated on this project's 2-core benchmark machine
from benchmarks/results/perf.json (the demo model's measured body-forward tokens per CPU second);
the GPU classes take the dense bf16 / TF32 tensor-core peak times a model FLOP utilisation
typical of short-sequence LoRA fine-tuning, plus a per-batch launch overhead. They are estimates
until a GPU run calibrates them; docs/engine.md says which figures were measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tov_plan.memory import ModelShape, Workload, model_shape, parameter_count, trainable_count
from tov_plan.plan import Phase, Plan


@dataclass(frozen=True)
class ModelDims:
    """What the FLOP count needs of a model (from memory.model_shape and its counts)."""

    shape: ModelShape
    params: int  # every weight
    lora_params: int  # one adapter's trainable weights (0: full fine-tuning)

    @property
    def layers(self) -> int:
        return self.shape.layers

    @property
    def body_params(self) -> int:
        """Weights of the layers' projections (embeddings, norms and the head excluded)."""
        return self.shape.linear_params()


def model_dims(
    config: dict[str, Any],
    *,
    task: str,
    lora_rank: int | None,
    target_modules: str | tuple[str, ...] = "all-linear",
) -> ModelDims:
    """ModelDims from a config.json (ValueError when it lacks the sizes)."""
    w = Workload(
        model_config=config, task=task, lora_rank=lora_rank, lora_target_modules=target_modules
    )
    lora = trainable_count(w) if lora_rank is not None else 0
    return ModelDims(shape=model_shape(config), params=parameter_count(w), lora_params=lora)


@dataclass(frozen=True)
class DeviceClass:
    """Effective throughput of one kind of worker."""

    name: str
    description: str
    flops_bf16: float  # effective FLOP/s with bf16 base weights
    flops_fp32: float  # effective FLOP/s in float32 (TF32 tensor cores on a GPU)
    batch_overhead_s: float  # fixed seconds per batch and layer (kernel launches)
    load_bytes_per_s: float  # weights read into the device
    start_s: float  # process work before the first batch (imports, model build)
    memory_bytes: int  # what a job may use (GPU memory; RAM for cpu)
    bf16_default: bool  # what precision "auto" resolves to
    calibrated: str  # where the figures come from

    def flops(self, precision: str) -> float:
        bf16 = precision == "bfloat16" or (precision == "auto" and self.bf16_default)
        return self.flops_bf16 if bf16 else self.flops_fp32


# SmolLM2-135M body: 106.2M projection weights -> 212.3 MFLOP a token + attention; perf.json's
# 345.6 body-forward tokens per CPU second -> 7.4e10 FLOP/s a core; the 2 cores of the benchmark
# machine at 0.75 parallel efficiency (torch's intra-op threads on small matrices).
CPU_FLOPS_PER_CORE = 7.4e10
CPU_CORES, CPU_PARALLEL = 2, 0.75
GIB = 1 << 30

DEVICE_CLASSES: dict[str, DeviceClass] = {
    "cpu": DeviceClass(
        name="cpu",
        description="this project's 2-core CPU machine",
        # torch's bf16 matmuls on CPU without AMX run at about a third of float32
        flops_bf16=CPU_FLOPS_PER_CORE * CPU_CORES * CPU_PARALLEL / 3,
        flops_fp32=CPU_FLOPS_PER_CORE * CPU_CORES * CPU_PARALLEL,
        batch_overhead_s=0.0,
        load_bytes_per_s=0.5e9,
        start_s=6.0,
        memory_bytes=16 * GIB,
        bf16_default=False,
        calibrated="benchmarks/results/perf.json body-forward throughput (measured)",
    ),
    "h100": DeviceClass(
        name="h100",
        description="NVIDIA H100 80GB SXM",
        flops_bf16=989e12 * 0.35,
        flops_fp32=494e12 * 0.35,
        batch_overhead_s=1.5e-4,
        load_bytes_per_s=2.0e9,
        start_s=15.0,
        memory_bytes=80 * 10**9,
        bf16_default=True,
        calibrated="datasheet peak x 0.35 MFU (estimate)",
    ),
    "a100": DeviceClass(
        name="a100",
        description="NVIDIA A100 80GB",
        flops_bf16=312e12 * 0.4,
        flops_fp32=156e12 * 0.4,
        batch_overhead_s=2.0e-4,
        load_bytes_per_s=2.0e9,
        start_s=15.0,
        memory_bytes=80 * 10**9,
        bf16_default=True,
        calibrated="datasheet peak x 0.4 MFU (estimate)",
    ),
    "l4": DeviceClass(
        name="l4",
        description="NVIDIA L4 24GB",
        flops_bf16=121e12 * 0.4,
        flops_fp32=60e12 * 0.4,
        batch_overhead_s=2.0e-4,
        load_bytes_per_s=1.0e9,
        start_s=15.0,
        memory_bytes=24 * 10**9,
        bf16_default=True,
        calibrated="datasheet peak x 0.4 MFU (estimate)",
    ),
}
PREPARE_TOKENS_PER_S = 28_652.0  # perf.json: tokenising, tokens per CPU second (measured)


def device_class(name: str) -> DeviceClass:
    """The class named `name`, or a ValueError listing the known ones."""
    try:
        return DEVICE_CLASSES[name]
    except KeyError:
        known = ", ".join(sorted(DEVICE_CLASSES))
        raise ValueError(f"unknown device class '{name}'; known: {known}") from None


def forward_flops(dims: ModelDims, phase: Phase) -> float:
    """FLOPs of `phase`'s forward passes (all its runs)."""
    if phase.rows == 0:
        return 0.0
    s = dims.shape
    width = phase.tokens / phase.rows  # mean padded width of a row
    body = 2 * (dims.body_params + dims.lora_params)
    attention = 2 * s.layers * width * s.q_dim  # QK^T and AV, causal: half of 4 x width x q
    head = 2 * s.hidden * s.vocab
    return phase.tokens * (body + attention) + phase.loss_tokens * head


def phase_seconds(
    dims: ModelDims, phase: Phase, device: DeviceClass, precision: str, recompute: bool = False
) -> float:
    """Wall seconds of every run of `phase` on `device` (`recompute`: gradient checkpointing
    runs each training forward twice)."""
    fwd = forward_flops(dims, phase)
    backward = (1.0 if dims.lora_params else 2.0) + (1.0 if recompute else 0.0)
    factor = 1.0 + (backward if phase.backward else 0.0)
    compute = factor * fwd / device.flops(precision)
    overhead = factor * phase.batches * dims.layers * device.batch_overhead_s
    return compute + overhead


def less_projection_seconds(dims: ModelDims, plan: Plan, device: DeviceClass, dim: int) -> float:
    """LESS: each gradient row is projected to `dim` (2 P d FLOPs); the projection's blocks are
    generated once per gathering of up to 1 GiB of gradients (about 10 FLOP-equivalents an
    element)."""
    p = dims.lora_params
    d = min(dim, p)
    rows = sum(ph.rows for ph in plan.phases if ph.name.endswith("gradients"))
    gatherings = sum(
        ph.passes * math.ceil(ph.rows // max(1, ph.passes) * p * 4 / GIB)
        for ph in plan.phases
        if ph.name.endswith("gradients")
    )
    return (2.0 * p * d * rows + 10.0 * p * d * gatherings) / device.flops_fp32


def predict_seconds(
    dims: ModelDims,
    plan: Plan,
    device: DeviceClass,
    *,
    precision: str,
    weight_file_bytes: int,
    tokens_to_encode: int,
    method: str,
    less_projection_dim: int = 8192,
    recompute: bool = False,
) -> dict[str, float]:
    """Seconds by part: start, loading the weights, tokenising, each phase, and the total."""
    parts: dict[str, float] = {"prepare": tokens_to_encode / PREPARE_TOKENS_PER_S}
    if method != "random":
        parts["start"] = device.start_s
        parts["load_weights"] = weight_file_bytes / device.load_bytes_per_s
    for phase in plan.phases:
        key = phase.name.replace(" ", "_")
        parts[key] = parts.get(key, 0.0) + phase_seconds(dims, phase, device, precision, recompute)
    if method == "less" and dims.lora_params:
        parts["less_projection"] = less_projection_seconds(dims, plan, device, less_projection_dim)
    parts["total"] = sum(parts.values())
    return parts
