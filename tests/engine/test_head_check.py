"""The head shortcut: checked once per model against the model's own logits, honouring Granite's
`logits_scaling` and attributes nested under `text_config`, with a fallback on a mismatch."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM

from tov_engine.data.batching import Batch
from tov_engine.data.encoded import IGNORE
from tov_engine.model.head import CHECKED, config_value
from tov_engine.model.logprob import token_logprobs


def _batch(vocab: int, rows: int = 3, length: int = 12) -> Batch:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (rows, length), generator=gen)
    labels = ids.clone()
    labels[:, :4] = IGNORE  # a prompt
    mask = torch.ones_like(ids)
    return Batch(rows=np.arange(rows), input_ids=ids, attention_mask=mask, labels=labels)


def _own_logprobs(model: Any, batch: Batch) -> torch.Tensor:
    """What the model's own forward says: log-softmax of its logits at the loss positions."""
    targets = batch.labels[:, 1:]
    where = (targets != IGNORE).nonzero(as_tuple=True)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return -F.cross_entropy(logits[:, :-1][where].float(), targets[where], reduction="none")


def _sharpen(model: Any) -> None:
    # Random tiny heads give near-uniform log-probs, where a wrong scale hardly shows: make the
    # logits large so that every post-head transform matters.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)


def _granite(scaling: float = 8.0) -> GraniteForCausalLM:
    config = GraniteConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        logits_scaling=scaling,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = GraniteForCausalLM(config).eval()
    _sharpen(model)
    return model


def test_granite_logits_scaling_is_honoured() -> None:
    model = _granite()
    batch = _batch(97)
    with torch.no_grad():
        got = token_logprobs(model, batch, "causal_lm").values
        own = _own_logprobs(model, batch)
    assert model.__dict__[CHECKED] is True  # the shortcut was checked and kept
    assert torch.allclose(got, own, atol=1e-4)


class _Shifted(LlamaForCausalLM):
    """A model whose forward changes its logits after the head in a way no config attribute says."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 0.25
        return out


def test_a_mismatch_falls_back_to_the_full_forward() -> None:
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = _Shifted(config).eval()
    _sharpen(model)
    batch = _batch(97)
    with torch.no_grad():
        got = token_logprobs(model, batch, "causal_lm").values
        own = _own_logprobs(model, batch)
        again = token_logprobs(model, _batch(97, rows=2), "causal_lm").values
    assert model.__dict__[CHECKED] is False  # checked once, remembered
    assert torch.allclose(got, own, atol=1e-5)
    assert torch.allclose(again, _own_logprobs(model, _batch(97, rows=2)), atol=1e-5)


def test_the_check_keeps_training_mode_and_random_state() -> None:
    model = _granite()
    model.train()
    token_logprobs(model, _batch(97), "causal_lm")
    assert model.training and model.__dict__[CHECKED] is True
    # The check itself draws nothing: a model in eval mode leaves the generator where it was.
    model2 = _granite().eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        token_logprobs(model2, _batch(97), "causal_lm")
    assert torch.equal(state, torch.get_rng_state())


def test_attributes_nested_under_text_config() -> None:
    nested = SimpleNamespace(text_config=SimpleNamespace(logits_scaling=4.0))
    assert config_value(nested, "logits_scaling") == 4.0
    top = SimpleNamespace(logits_scaling=2.0, text_config=SimpleNamespace(logits_scaling=4.0))
    assert config_value(top, "logits_scaling") == 2.0
    assert config_value(SimpleNamespace(), "logits_scaling") is None
