"""Loading a model and tokenizer from a local folder; the device."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tov_engine.errors import ModelError

logger = logging.getLogger(__name__)

ADAPTERS = ("base", "val")
# Heads that peft keeps as full trainable copies per adapter for token classification.
CLASSIFIER_HEADS = ["classifier", "score"]


def resolve_device(device: str | None) -> torch.device:
    """The device to run on: the configured one, else cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_dir(model: str | Path) -> Path:
    path = Path(model)
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path} (models load from local folders only)")
    return path


def load_tokenizer(model: str | Path) -> Any:
    """A fast tokenizer from a local model folder, with pad = eos when the pad token is missing."""
    from transformers import AutoTokenizer  # lazy: importing transformers costs seconds

    path = _model_dir(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer from {path}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"the tokenizer in {path} is not a fast tokenizer (offsets are needed)")
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(f"the tokenizer in {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model: str | Path,
    *,
    task: str,
    device: torch.device,
    labels: list[Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load the weights (safetensors only, no remote code) in `dtype` onto `device`.

    Args:
        model: local folder. task: "causal_lm" or "token_classification".
        device: target device. labels: the tag set (token classification; a new head of this size).
        dtype: the dtype the weights load in, directly (the precision policy's weights_dtype).
    Returns:
        The transformers model.
    """
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    path = _model_dir(model)
    common: dict[str, Any] = dict(
        dtype=dtype, trust_remote_code=False, use_safetensors=True, local_files_only=True
    )
    try:
        if task == "causal_lm":
            loaded = AutoModelForCausalLM.from_pretrained(path, **common)
        else:
            names = [str(t) for t in labels or []]
            loaded = AutoModelForTokenClassification.from_pretrained(
                path,
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                ignore_mismatched_sizes=True,  # a checkpoint's own head has another label set
                **common,
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load a {task} model from {path}: {exc}") from exc
    if task == "causal_lm" and loaded.config.pad_token_id is None:
        loaded.config.pad_token_id = loaded.config.eos_token_id
    moved: nn.Module = loaded.to(device)  # type: ignore[arg-type]
    return moved
