"""Training memory: gradient checkpointing and micro-batches under a padded-token budget.

Two knobs bound what a training step holds, neither changes what it computes:

- `gradient_checkpointing` ("auto" | "on" | "off", JobConfig): the transformer layers keep only
  their inputs in the forward and recompute their activations in the backward (non-reentrant
  torch checkpointing, which restores the RNG state, so dropout repeats exactly). Activation memory
  drops from every layer's intermediates to one hidden state per layer, for about a third more
  training compute. "auto" is on with CUDA and off on CPU (where memory is rarely the limit and
  the recompute costs ~30% training time). It is switched on for training epochs only: scoring
  runs in eval mode under inference_mode and never recomputes.
- `train_tokens_per_micro_batch` (ToVConfig): a batch of `batch_size` rows is cut, in its seeded
  order, into contiguous micro-batches whose padded size (rows x longest row) stays within the
  budget (a row longer than the budget is a micro-batch of its own). Gradients accumulate over
  the micro-batches and the optimizer steps once per batch; each micro-batch's loss is its sum of
  row-mean NLLs over the rows with loss in the whole batch, so the update is the one-batch update
  (to float rounding of the accumulation, and only where a batch is split; with dropout, a split
  batch draws its masks per micro-batch).

The resolved settings are attached to the model (`attach_memory`) where `train_epoch` finds them,
so every training path (ToV, uncertainty, LESS's warmup) uses them without more plumbing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tov_engine.config import GRADIENT_CHECKPOINTING, ToVConfig
from tov_engine.errors import ModelError

logger = logging.getLogger(__name__)

ATTACHED = "tov_training_memory"  # attribute on the model: its TrainingMemory
DEFAULT_MICRO_BATCH_TOKENS = ToVConfig().train_tokens_per_micro_batch


@dataclass
class TrainingMemory:
    """A job's resolved training-memory settings, and the counts of what training ran.

    Args:
        checkpointing: gradient checkpointing on in training epochs (resolved, never "auto").
        tokens_per_micro_batch: padded-token budget of one training micro-batch.
        stats: where the counts go (a job's stats); None = kept here only.
    """

    checkpointing: bool = False
    tokens_per_micro_batch: int = DEFAULT_MICRO_BATCH_TOKENS
    stats: dict[str, Any] | None = None
    steps: int = 0  # optimizer steps (training batches with loss)
    micro_batches: int = 0  # forward/backward passes of training

    def count(self, steps: int, micro_batches: int) -> None:
        """Add one epoch's counts, here and in `stats`."""
        self.steps += steps
        self.micro_batches += micro_batches
        if self.stats is not None:
            self.stats["train_steps"] = int(self.stats.get("train_steps", 0)) + steps
            self.stats["train_micro_batches"] = (
                int(self.stats.get("train_micro_batches", 0)) + micro_batches
            )

    def report_to(self, stats: dict[str, Any]) -> None:
        """Send the settings and from now on the counts to `stats` (a job's statistics)."""
        self.stats = stats
        stats["gradient_checkpointing"] = "on" if self.checkpointing else "off"
        stats["train_tokens_per_micro_batch"] = self.tokens_per_micro_batch
        stats.setdefault("train_steps", 0)
        stats.setdefault("train_micro_batches", 0)


def _transformers_model(model: nn.Module) -> Any:
    # A peft model keeps the transformers model at .base_model.model.
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if hasattr(model, "peft_config") and inner is not None else model


def supports_checkpointing(model: nn.Module) -> bool:
    """Whether the (transformers) model can checkpoint its layers."""
    return bool(getattr(_transformers_model(model), "supports_gradient_checkpointing", False))


def resolve_gradient_checkpointing(
    requested: str, device: torch.device, model: nn.Module | None = None
) -> bool:
    """Whether training checkpoints activations: "on", "off", or "auto" (on with CUDA only).

    Given the model, "auto" is off for a model that cannot checkpoint its layers, and "on" for
    such a model is a ModelError (before any training)."""
    if requested not in GRADIENT_CHECKPOINTING:
        raise ValueError(
            f"gradient_checkpointing must be one of {GRADIENT_CHECKPOINTING}, got {requested!r}"
        )
    on = device.type == "cuda" if requested == "auto" else requested == "on"
    if on and model is not None and not supports_checkpointing(model):
        name = type(_transformers_model(model)).__name__
        if requested == "on":
            raise ModelError(
                f"{name} does not support gradient checkpointing; set gradient_checkpointing "
                "to 'off' or 'auto'"
            )
        logger.warning("%s does not support gradient checkpointing: training without it", name)
        return False
    return on


def attach_memory(model: nn.Module, memory: TrainingMemory) -> None:
    """Record the settings on the model, where `train_epoch` looks them up."""
    object.__setattr__(model, ATTACHED, memory)


def training_memory(model: nn.Module) -> TrainingMemory:
    """The model's attached settings; without any, no checkpointing and the default budget
    (attached then, so counts accumulate in one place)."""
    found = model.__dict__.get(ATTACHED)
    if isinstance(found, TrainingMemory):
        return found
    memory = TrainingMemory()
    attach_memory(model, memory)
    return memory


@contextlib.contextmanager
def checkpointing(model: nn.Module, on: bool) -> Iterator[None]:
    """Gradient checkpointing of the transformer layers inside the block (training), off after.

    Non-reentrant torch checkpointing: parameters inside a layer get their gradients whether or
    not its input requires one (LoRA and full fine-tuning alike), and the RNG state is restored
    for the recompute, so dropout masks repeat exactly. The input-embedding hook transformers adds
    for adapters is removed on the way out, so scoring under inference_mode is untouched.
    """
    if not on:
        yield
        return
    hf = _transformers_model(model)
    if not supports_checkpointing(model):
        raise ModelError(
            f"{type(hf).__name__} does not support gradient checkpointing; "
            "set gradient_checkpointing to 'off'"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # the newer transformers name
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    try:
        yield
    finally:
        if hasattr(hf, "activation_checkpointing_disable"):
            hf.activation_checkpointing_disable()
        else:
            hf.gradient_checkpointing_disable()
        if hasattr(hf, "disable_input_require_grads"):
            hf.disable_input_require_grads()
