"""Scoring with one LoRA adapter folded into the weights.

peft's LoRA layer computes W x + s B (A x): two extra low-rank matmuls and two passes over the
layer's output for every linear layer of every forward, about a third of a SmolLM2 forward on CPU.
A scoring pass runs one adapter over many batches without gradients, so `merged` computes
W' = W + s B A once per pass, into a weight of its own (the base weights are never modified, so
nothing drifts), and every LoRA layer runs one plain linear with it.
W' is float32: the difference between the two adapters is small and most of it would fall below
bf16's rounding of W' (issue 14). Under the bfloat16 precision policy (precision.py) the base
weights are bf16 and nothing is folded: the LoRA branch runs unfolded, in float32.
Memory: one extra float32 copy of the adapted linear weights, held during the pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class Adapters(Protocol):
    """A model with named LoRA adapters (model.surrogate.Surrogate)."""

    model: nn.Module

    def use(self, which: str) -> None:
        """Make adapter `which` active."""


def _lora_layers(model: nn.Module) -> list[Any]:
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [m for m in model.modules() if isinstance(m, LoraLinear)]


def _mergeable(layer: Any, name: str) -> bool:
    """A plain LoRA on an nn.Linear (no DoRA or other variant, no LoRA bias, not merged by peft)."""
    base = layer.get_base_layer()
    return (
        isinstance(base, nn.Linear)
        and not getattr(layer, "fan_in_fan_out", False)
        and name in layer.lora_A
        and name not in getattr(layer, "lora_variant", {})
        and getattr(layer.lora_B[name], "bias", None) is None
        and not layer.merged
        and not layer.disable_adapters
        and base.weight.dtype == torch.float32  # bf16 base weights: the branch runs unfolded
    )


class _Folded(nn.Module):
    """x -> x W'^T + b, W' = W + s B A; stands in for a LoRA layer's forward."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@contextlib.contextmanager
def merged(surrogate: Adapters, which: str) -> Iterator[None]:
    """Inside the block adapter `which` is active and, where every LoRA layer allows it, folded.

    Args:
        surrogate: the model with its adapters (LoRA). which: "base" or "val".
    """
    surrogate.use(which)  # also selects the adapter's copy of a classification head
    layers = _lora_layers(surrogate.model)
    if not layers or not all(_mergeable(layer, which) for layer in layers):
        logger.debug("adapter %s is not folded: a LoRA layer is not a plain linear one", which)
        yield
        return
    try:
        with torch.no_grad():
            for layer in layers:
                base = layer.get_base_layer()
                weight = torch.addmm(
                    base.weight,
                    layer.lora_B[which].weight,
                    layer.lora_A[which].weight,
                    alpha=layer.scaling[which],
                )
                folded = _Folded(weight, base.bias)
                object.__setattr__(layer, "forward", folded.forward)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
