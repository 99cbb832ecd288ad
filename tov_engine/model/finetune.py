"""Fresh LoRA fine-tunes with one fixed recipe, measured on held-out rows (tov_engine/verify.py).

One model is loaded once; every fine-tune starts its adapter from the same per-seed
initialisation, so two arms of a seed differ only in the rows they train on.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from tov_engine.config import JobConfig, VerifySettings
from tov_engine.data.batching import make_batch, plan_buckets
from tov_engine.data.encoded import EncodedSet
from tov_engine.data.encoding import encode_rows, label_set
from tov_engine.errors import ModelError
from tov_engine.model.loading import load_model, load_tokenizer, resolve_device
from tov_engine.model.logprob import token_logprobs
from tov_engine.model.precision import (
    apply_determinism,
    attach,
    compute,
    float32_compute,
    resolve_precision,
    upcast_trainable,
)
from tov_engine.model.surrogate import CLASSIFIER_HEADS
from tov_engine.model.training import EpochPlan, make_optimizer, train_epoch
from tov_engine.progress import Tracker

ADAPTER = "verify"


class _Renamed(Tracker):
    """A view of a one-stage tracker that counts training rows under that stage's name."""

    def __init__(self, inner: Tracker) -> None:
        self.inner, self.stage = inner, next(iter(inner.totals))

    def advance(self, stage: str, units: int, message: str = "") -> None:
        self.inner.advance(self.stage, units, message)

    def check_cancel(self) -> None:
        self.inner.check_cancel()


class Verifier:
    """The model with a fresh `verify` adapter, the encoded training rows and the held-out rows.

    Args:
        model: the local model folder. config: the job's task, device, precision, max_length,
            seed and scoring batch budget. pool_rows: pool index -> row, every row an arm needs.
        holdout_rows: the held-out validation rows. settings: the fixed recipe.
    """

    def __init__(
        self,
        model: Any,
        config: JobConfig,
        pool_rows: dict[int, dict[str, Any]],
        holdout_rows: list[dict[str, Any]],
        settings: VerifySettings,
    ) -> None:
        self.config, self.settings = config, settings
        device = resolve_device(config.device)
        policy = resolve_precision(config.precision, device, config.deterministic)
        apply_determinism(policy)
        tokenizer = load_tokenizer(model)
        self.pad_id = int(tokenizer.pad_token_id)
        labels = None
        label_ids = None
        if config.task == "token_classification":
            labels = label_set(itertools.chain(pool_rows.values(), holdout_rows), "verify rows")
            label_ids = {tag: i for i, tag in enumerate(labels)}
        self.positions = {index: k for k, index in enumerate(sorted(pool_rows))}
        kw: dict[str, Any] = dict(max_length=config.max_length, label_ids=label_ids)
        self.train_set: EncodedSet = encode_rows(
            tokenizer, (pool_rows[i] for i in sorted(pool_rows)), **kw
        )
        self.holdout: EncodedSet = encode_rows(tokenizer, holdout_rows, **kw)
        self.holdout_rows = len(holdout_rows)
        torch.manual_seed(config.seed)  # a new classification head is random
        base = load_model(
            model, task=config.task, device=device, labels=labels, dtype=policy.weights_dtype(True)
        )
        self.model = _with_adapter(base, settings, config.task)
        if policy.bf16:
            upcast_trainable(self.model)
            float32_compute(self.model)
        attach(self.model, policy, True)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.head_state = {k: v.detach().clone() for k, v in self._head().items()}

    def _head(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if "modules_to_save" in n}

    @torch.no_grad()
    def _initialise(self, seed: int) -> None:
        """A fresh adapter: LoRA A random (seeded by the job seed and `seed`), B zero; a new
        classification head back to its loaded weights."""
        torch.manual_seed(int(np.random.default_rng([self.config.seed, seed, 29]).integers(2**31)))
        for module in self.model.modules():
            reset = getattr(module, "reset_lora_parameters", None)
            if reset is not None and ADAPTER in getattr(module, "lora_A", {}):
                reset(ADAPTER, True)
        for name, param in self._head().items():
            param.copy_(self.head_state[name])

    def finetune_and_measure(self, pool_indices: np.ndarray, seed: int, tracker: Tracker) -> float:
        """Train a fresh adapter on `pool_indices` for the recipe's epochs; the held-out loss."""
        self._initialise(seed)
        rows = np.asarray([self.positions[int(i)] for i in pool_indices], dtype=np.int64)
        optimizer = make_optimizer(self.trainable, self.settings.learning_rate)
        self.model.train()
        for epoch in range(self.settings.epochs):
            plan = EpochPlan(
                encoded=self.train_set,
                rows=rows,
                batch_size=self.settings.batch_size,
                seed=(self.config.seed, seed, epoch, 31),
                task=self.config.task,
                pad_id=self.pad_id,
            )
            train_epoch(self.model, optimizer, plan, _Renamed(tracker))
        return self._loss()

    def heldout_loss(self) -> float:
        """The base model's held-out loss (the adapter disabled)."""
        with self.model.disable_adapter():  # type: ignore[operator]
            return self._loss()

    @torch.inference_mode()
    def _loss(self) -> float:
        """Mean NLL over every loss-bearing token of the held-out rows (token-weighted)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        total, count = 0.0, 0
        rows = np.arange(len(self.holdout), dtype=np.int64)
        for batch_rows in plan_buckets(
            self.holdout.seq_lengths, rows, self.config.tov.tokens_per_batch
        ):
            batch = make_batch(self.holdout, batch_rows, self.pad_id, device)
            with compute(self.model):
                values = token_logprobs(self.model, batch, self.config.task).values
            total += float(-values.double().sum())
            count += int(values.numel())
        self.model.train()
        if count == 0:
            raise ModelError("the held-out validation rows carry no loss-bearing token")
        return total / count


def _with_adapter(model: nn.Module, settings: VerifySettings, task: str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    head = CLASSIFIER_HEADS if task == "token_classification" else None
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear",
        exclude_modules=head,
        modules_to_save=head,
        task_type="TOKEN_CLS" if head else "CAUSAL_LM",
    )
    try:
        wrapped: nn.Module = get_peft_model(model, config, adapter_name=ADAPTER)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"cannot attach a LoRA adapter for verification: {exc}") from exc
    return wrapped
