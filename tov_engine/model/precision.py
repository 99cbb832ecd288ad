"""The precision policy: which dtype each kind of weight and computation runs in, per job.

Why a policy: ToV scores are differences between two adapters' log-probs, and the difference
between the adapters is small. bf16 keeps 8 significant bits, so anything that rounds the adapters,
their difference or the head's log-softmax to bf16 turns scores into noise (issue 14). The policy:

- "float32": every weight and computation in float32 (the CPU default; exactly today's numerics).
- "bfloat16": the frozen base weights are stored in bf16 (half the memory) and computed with in
  float32 (`float32_compute`: each layer upcasts its weight per call, so activations and the
  difference between the adapters are never rounded to bf16); the LoRA weights, their gradients
  and optimizer state stay float32 (peft upcasts them), the LoRA branch runs unfolded in float32
  (merged.py does not fold into bf16 weights), and the head's logits and log-softmax are computed
  in float32 (logprob.py). Full fine-tuning has no frozen
  weights: it keeps float32 weights and runs the forward under bf16 autocast, so an update smaller
  than bf16's spacing is not lost. This policy runs on CPU too, so tests exercise the GPU's code.

"auto" picks bfloat16 on a CUDA device that supports it, float32 elsewhere.

Determinism (`deterministic`, on by default): `torch.use_deterministic_algorithms` (warn_only, so
an op without a deterministic kernel warns instead of failing), deterministic cuDNN, and per-row
sums in a fixed order (logprob.py), so the "identical results" promises (resume, staged, pool
cache, multi-target) hold on a GPU as on CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("auto", "float32", "bfloat16")
# cuBLAS matmuls are reproducible with a fixed workspace, CUBLAS_WORKSPACE_CONFIG=:4096:8 in the
# process's environment before CUDA starts: the worker sets it (the engine reads no environment).
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class Precision:
    """A resolved policy (never "auto")."""

    name: str = "float32"  # "float32" | "bfloat16"
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS[1:]:
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.name!r}")

    @property
    def bf16(self) -> bool:
        """True for the bfloat16 policy."""
        return self.name == "bfloat16"

    def weights_dtype(self, lora: bool) -> torch.dtype:
        """The dtype the base weights load in: bf16 only when they stay frozen (LoRA)."""
        return torch.bfloat16 if self.bf16 and lora else torch.float32

    def autocast(self, device: torch.device, lora: bool) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for full fine-tuning under the bf16 policy; nothing otherwise (bf16
        LoRA computes in float32 from its bf16 weights: float32_compute)."""
        if self.bf16 and not lora:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def bf16_supported(device: torch.device) -> bool:
    """bf16 where the hardware has it: CUDA with bf16 support (Ampere and later)."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(
    requested: str, device: torch.device, deterministic: bool = True
) -> Precision:
    """The policy for `requested` ("auto", "float32" or "bfloat16") on `device`.

    "auto" is bfloat16 on a bf16-capable CUDA device, else float32 (on CPU bf16 only when asked).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        requested = "bfloat16" if bf16_supported(device) else "float32"
    return Precision(requested, deterministic)


def apply_determinism(precision: Precision) -> None:
    """Switch deterministic algorithms on or off for this process, as the policy says.

    A worker runs one job at a time, so the process-wide switch follows the running job.
    """
    torch.use_deterministic_algorithms(precision.deterministic, warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = precision.deterministic
        torch.backends.cudnn.benchmark = not precision.deterministic


def attach(model: nn.Module, precision: Precision, lora: bool) -> None:
    """Record the policy on the model, where the forward passes (`compute`) look it up."""
    object.__setattr__(model, "tov_precision", (precision, lora))


def compute(model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a forward of `model` under its policy (attach), else none."""
    found = getattr(model, "tov_precision", None)
    if found is None:
        return contextlib.nullcontext()
    precision, lora = found
    device = next(model.parameters()).device
    return precision.autocast(device, lora)


def upcast_trainable(model: nn.Module) -> None:
    """Trainable weights in float32 (a new classification head loads in bf16 with the model).

    Such a module gets its floating inputs cast to float32, so a bf16 hidden state meets float32
    weights (peft's LoRA layers do this for their own branch already)."""
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        # peft's per-adapter head copies are trainable whichever adapter is active now
        trainable = any(p.requires_grad for p in own) or "modules_to_save" in name.split(".")
        if not own or not trainable or all(p.dtype == torch.float32 for p in own):
            continue
        module.float()
        module.register_forward_pre_hook(_to_float32)


def float32_compute(model: nn.Module) -> int:
    """Frozen bf16 Linear, Embedding and LayerNorm layers compute in float32 from their bf16
    weights (upcast per call, one layer at a time): activations, the residual stream and so the
    difference between the two adapters are never rounded to bf16.

    Rounding activations to bf16 costs ToV its signal: on the tiny test model at the default
    epsilon, bf16 activations gave a Spearman of 0.947 against float32 (0.75 overlap of the score
    halves), float32 compute over the same bf16 weights 0.9996 (1.0); SmolLM2 on the demo data with
    bf16 activations: 0.88 (0.5). Returns the number of layers switched."""
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dtype != torch.bfloat16:
            continue
        forward = _FLOAT32_FORWARDS.get(type(module))
        if forward is None:
            continue
        object.__setattr__(module, "forward", forward.__get__(module))
        count += 1
    return count


def _linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.float()
    return F.linear(x.float(), self.weight.float(), bias)


def _embedding(self: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    return F.embedding(ids, self.weight, self.padding_idx).float()  # a lookup: exact in float32


def _layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    weight = None if self.weight is None else self.weight.float()
    bias = None if self.bias is None else self.bias.float()
    return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


_FLOAT32_FORWARDS: dict[type[nn.Module], Any] = {
    nn.Linear: _linear,
    nn.Embedding: _embedding,
    nn.LayerNorm: _layer_norm,
}


def _to_float32(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
