"""The surrogate: theta_bas and theta_val as two adapters over one copy of the base weights.

theta_bas and theta_val live on one copy of the base weights as two named LoRA adapters ("base"
and "val"); switching between them is `set_adapter`, copying one into the other is a parameter copy.
With LoRA disabled (full fine-tuning) there is one set of live weights: `snapshot` keeps theta_bas
where the validation epoch would overwrite it and `restore` puts it back, so the ToV loop is the
same for both.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tov_engine.config import LoraSettings
from tov_engine.errors import ModelError
from tov_engine.model.merged import merged

logger = logging.getLogger(__name__)

ADAPTERS = ("base", "val")
# Heads that peft keeps as full trainable copies per adapter for token classification.
CLASSIFIER_HEADS = ["classifier", "score"]


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

    def scoring(self, which: str) -> contextlib.AbstractContextManager[None]:
        """For a scoring pass: adapter `which` folded into the weights (LoRA); else the live
        weights (full fine-tuning has one set, theta_bas or theta_val as last trained)."""
        return merged(self, which) if self.lora else contextlib.nullcontext()

    def snapshot(self) -> dict[str, torch.Tensor] | None:
        """theta_bas, where the validation epoch will train it in place (full fine-tuning: a CPU
        copy of the live weights); None with LoRA, whose base adapter that epoch leaves alone."""
        return None if self.lora else self.state("base")

    def restore(self, snapshot: dict[str, torch.Tensor] | None) -> None:
        """theta_bas back after the validation epoch (full fine-tuning); a no-op with LoRA."""
        if not self.lora and snapshot is not None:
            self.load_state("base", snapshot)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[nn.Module]:
        """The base model with every adapter switched off, in eval() mode (LoRA only: full
        fine-tuning has trained the base weights themselves)."""
        if not self.lora:
            raise ModelError("a frozen base needs LoRA: full fine-tuning changed the weights")
        with self.model.disable_adapter(), self.evaluating():  # type: ignore[operator]
            yield self.model.get_base_model()  # type: ignore[operator]

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """eval() mode (no dropout) inside the block, back to train() after."""
        self.model.eval()
        try:
            yield
        finally:
            self.model.train()
