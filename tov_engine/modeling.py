"""Loading a model and tokenizer from a local folder, and the two-adapter surrogate.

theta_bas and theta_val live on one copy of the base weights as two named LoRA adapters ("base"
and "val"); switching between them is `set_adapter`, copying one into the other is a parameter copy.
With LoRA disabled (full fine-tuning) there is one set of live weights; tov.py then scores in two
passes and snapshots what it must restore.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tov_engine.config import LoraSettings
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


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (weights stay float32); nothing on CPU, where bf16 is slow."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    model: str | Path, *, task: str, device: torch.device, labels: list[Any] | None = None
) -> nn.Module:
    """Load float32 weights (safetensors only, no remote code) onto `device`.

    Args:
        model: local folder. task: "causal_lm" or "token_classification".
        device: target device. labels: the tag set (token classification; a new head of this size).
    Returns:
        The transformers model.
    """
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    path = _model_dir(model)
    common: dict[str, Any] = dict(
        dtype=torch.float32, trust_remote_code=False, use_safetensors=True, local_files_only=True
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


def _adapter_pattern(name: str) -> re.Pattern[str]:
    # peft names adapter weights "...lora_A.<adapter>.weight" / "...modules_to_save.<adapter>...".
    return re.compile(rf"\.(lora_[A-Za-z_]+|modules_to_save)\.{re.escape(name)}\.")


class Surrogate:
    """theta_bas and theta_val over one set of base weights.

    Args:
        model: the loaded transformers model (wrapped here with peft when LoRA is on).
        lora: adapter settings. task: "causal_lm" or "token_classification".
    """

    def __init__(self, model: nn.Module, lora: LoraSettings, task: str) -> None:
        self.lora = lora.enabled
        if not self.lora:
            self.model = model
            return
        from peft import LoraConfig, get_peft_model

        head = CLASSIFIER_HEADS if task == "token_classification" else None
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules)
            if isinstance(lora.target_modules, tuple)
            else lora.target_modules,
            exclude_modules=head,  # "all-linear" would otherwise wrap the new head in LoRA
            modules_to_save=head,  # a new head must be trained, one copy per adapter
            task_type="TOKEN_CLS" if head else "CAUSAL_LM",
        )
        try:
            peft_model: Any = get_peft_model(model, config, adapter_name="base")
            peft_model.add_adapter("val", config)
            self.model = peft_model
        except (ValueError, TypeError) as exc:
            raise ModelError(f"cannot attach LoRA adapters: {exc}") from exc
        self.use("base")

    def use(self, which: str) -> None:
        """Make adapter `which` active (and the only trainable one)."""
        if self.lora:
            self.model.set_adapter(which)  # type: ignore[operator]

    def named_params(self, which: str) -> dict[str, nn.Parameter]:
        """The parameters trained for `which`, keyed by a name shared between adapters."""
        if not self.lora:
            return dict(self.model.named_parameters())
        pattern = _adapter_pattern(which)
        return {
            pattern.sub(lambda m: f".{m.group(1)}.", name): p
            for name, p in self.model.named_parameters()
            if pattern.search(name)
        }

    def params(self, which: str) -> list[nn.Parameter]:
        """The parameter list to hand to an optimizer for `which`."""
        return list(self.named_params(which).values())

    @torch.no_grad()
    def copy(self, source: str, target: str) -> None:
        """Set adapter `target` to the weights of adapter `source` (LoRA only)."""
        if not self.lora:
            return
        src, dst = self.named_params(source), self.named_params(target)
        for key, param in dst.items():
            param.copy_(src[key])

    def state(self, which: str) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights of `which` (the whole model without LoRA)."""
        return {k: p.detach().to("cpu", copy=True) for k, p in self.named_params(which).items()}

    @torch.no_grad()
    def load_state(self, which: str, state: dict[str, torch.Tensor]) -> None:
        """Load a `state()` back into `which`."""
        params = self.named_params(which)
        missing = set(params) ^ set(state)
        if missing:
            raise ModelError(f"saved state does not fit the model: {sorted(missing)[:3]}")
        for key, param in params.items():
            param.copy_(state[key].to(param.device))

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """eval() mode (no dropout) inside the block, back to train() after."""
        self.model.eval()
        try:
            yield
        finally:
            self.model.train()
