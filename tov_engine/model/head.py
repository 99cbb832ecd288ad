"""The head shortcut: log-probs from the last hidden states, the head run on loss positions only.

A causal LM's forward runs its output head over every position; scoring needs the loss-bearing
ones only (prompts and padding are most positions). The shortcut takes the base model's hidden
states and runs the head on the loss positions, in float32. It must reproduce what the model's own
forward does after the head: Granite divides its logits by `logits_scaling`, Gemma soft-caps them,
and multimodal configs keep these under `text_config`. Anything else a model may do there is caught
by `shortcut_ok`: once per model, on the first batch, the shortcut is compared with the model's own
logits, and a mismatch sends that model to the full forward for good.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

# Post-head transforms the shortcut cannot reproduce: such a model always takes the full forward.
UNSUPPORTED = ("logit_scale", "output_multiplier_scale")
CHECK_ROWS = 2  # rows of the first batch the check runs the full forward on (bounds its logits)
CHECKED = "_tov_head_shortcut"  # attribute on the model: the check's verdict
# The check's tolerance on mean |shortcut - full| / (1 + mean |full|): float32 agrees to rounding;
# under bf16 the full forward's logits are rounded to bf16 (about 3 significant digits).
TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2


def config_value(config: Any, name: str) -> Any:
    """`name` from the config or, where a composite config keeps it there, its text_config."""
    for part in (config, getattr(config, "text_config", None)):
        value = getattr(part, name, None) if part is not None else None
        if value is not None:
            return value
    return None


def supported(model: Any) -> bool:
    """Whether the shortcut can reproduce the model's post-head transform at all."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_output_embeddings"):
        return False
    return all(config_value(config, name) in (None, 1, 1.0) for name in UNSUPPORTED)


def head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """(M, H) hidden states -> (M, V) float32 logits as the model's forward would give them.

    A float32 head runs as the module itself (unchanged numerics); a bf16 head runs in float32 on
    an upcast copy of its weight, so log-softmax differences are not rounded to bf16.
    """
    head = model.get_output_embeddings()
    with torch.autocast(hidden.device.type, enabled=False):  # float32 also under bf16 autocast
        if head.weight.dtype == torch.float32:
            logits = head(hidden.float()).float()
        else:
            bias = None if head.bias is None else head.bias.float()
            logits = F.linear(hidden.float(), head.weight.float(), bias)
    scale = config_value(model.config, "logits_scaling")
    if scale not in (None, 1, 1.0):
        logits = logits / scale  # Granite
    cap = config_value(model.config, "final_logit_softcapping")
    if cap not in (None, 0, 0.0):
        logits = torch.tanh(logits / cap) * cap  # Gemma 2
    return logits


def _gold_logprobs(model: Any, hidden: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """log p(gold) of (M, H) hidden states through the head (float32 log-softmax)."""
    return -F.cross_entropy(head_logits(model, hidden), gold, reduction="none")


def _float_gold_logprobs(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits.float(), gold, reduction="none")


def chunked(fn: Any, first: torch.Tensor, gold: torch.Tensor, chunk: int) -> torch.Tensor:
    """fn(first[i:i+chunk], gold[i:i+chunk]) over the chunks, concatenated.

    With gradients on and more than one chunk, each chunk runs under a (non-reentrant) checkpoint:
    the backward keeps only the chunk's input, not its (chunk, V) float32 log-softmax, and
    recomputes that one chunk at a time, so a batch's logits are never all held at once. The
    values are the same either way (the recompute repeats the forward exactly)."""
    keep_inputs_only = torch.is_grad_enabled() and len(gold) > chunk
    parts = [
        checkpoint(fn, first[i : i + chunk], gold[i : i + chunk], use_reentrant=False)
        if keep_inputs_only
        else fn(first[i : i + chunk], gold[i : i + chunk])
        for i in range(0, len(gold), chunk)
    ]
    return torch.cat(parts) if parts else first.new_zeros(0, dtype=torch.float32)


def shortcut_values(
    model: Any,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    where: tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """log p(gold) at `where` from the base model's hidden states, the head run per chunk."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False)
    picked = hidden.last_hidden_state[:, :-1][where]  # (M, H)
    return chunked(lambda h, g: _gold_logprobs(model, h, g), picked, targets[where], chunk)


def _keeps_logits(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (the head on chosen positions only)."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    hf = inner if hasattr(model, "peft_config") and inner is not None else model
    try:
        return "logits_to_keep" in inspect.signature(hf.forward).parameters
    except (TypeError, ValueError):
        return False


def full_values(
    model: Any,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    where: tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    chunk: int = 2048,
) -> torch.Tensor:
    """log p(gold) at `where` from the model's own forward (its own head and post-head transform).

    Where the model takes `logits_to_keep`, its head runs only on the positions where some row
    has a loss token (prompts and padding get no logits); the log-softmax runs in float32 on the
    loss positions only, `chunk` at a time (chunked)."""
    width = input_ids.shape[1] - 1
    positions = torch.unique(where[1])  # sorted
    extra: dict[str, Any] = {}
    if 0 < len(positions) < width and _keeps_logits(model):
        extra["logits_to_keep"] = positions
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, **extra).logits
    if extra and logits.shape[1] == len(positions):
        picked = logits[where[0], torch.searchsorted(positions, where[1])]  # (M, V)
    else:
        picked = logits[:, :-1][where]  # (M, V)
    del logits
    return chunked(_float_gold_logprobs, picked, targets[where], chunk)


def shortcut_ok(
    model: Any,
    hf: Any,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    ignore: int,
    chunk: int,
) -> bool:
    """Whether the shortcut gives `hf`'s own log-probs: checked once per model, then remembered.

    The check runs the first CHECK_ROWS rows of the first batch both ways, in eval mode (no
    dropout, so no random numbers are drawn and training is unaffected); nothing is backpropagated
    through it.

    Args:
        model: what the caller runs (peft-wrapped or not). hf: the transformers model inside it.
        input_ids, mask, targets: the batch (targets = labels shifted by one). ignore: IGNORE.
        chunk: loss positions per head call.
    """
    verdict = hf.__dict__.get(CHECKED)
    if verdict is not None:
        return bool(verdict)
    if not supported(hf):
        object.__setattr__(hf, CHECKED, False)
        return False
    k = min(CHECK_ROWS, len(input_ids))
    ids, m, t = input_ids[:k], mask[:k], targets[:k]
    where = (t != ignore).nonzero(as_tuple=True)
    if len(where[0]) == 0:
        return True  # nothing to compare on yet: use the shortcut, check on a later batch
    was_training = model.training
    model.eval()
    try:  # in the caller's grad mode: hooks that catch outputs for a backward need their grads
        short = shortcut_values(hf, ids, m, where, t, chunk).detach()
        full = full_values(model, ids, m, where, t).detach()
    finally:
        model.train(was_training)
    error = float((short - full).abs().mean() / (1 + full.abs().mean()))
    exact = (
        hf.get_output_embeddings().weight.dtype == torch.float32
        and not torch.is_autocast_enabled(ids.device.type)
    )
    tolerance = TOLERANCE if exact else BF16_TOLERANCE
    verdict = error <= tolerance
    if not verdict:
        logger.warning(
            "the head shortcut disagrees with %s's own logits (relative error %.3g > %.3g): "
            "scoring with the full forward",
            type(hf).__name__,
            error,
            tolerance,
        )
    object.__setattr__(hf, CHECKED, verdict)
    return verdict
