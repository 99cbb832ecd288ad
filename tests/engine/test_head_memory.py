"""The log-probs never hold a whole batch's logits: the head runs per chunk of loss positions,
under a checkpoint when gradients are on (only hidden states are kept for the backward), and the
full-forward fallback asks the model for logits at loss positions only (issue 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from tov_engine.model.head import full_values, shortcut_values


@pytest.fixture(scope="module")
def model(tiny_causal_lm_dir: Path) -> Any:
    loaded = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir)
    loaded.train()  # gradients flow; the tiny model has no dropout
    return loaded


def _batch() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 500, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a padded row
    targets = ids[:, 1:].clone()
    targets[:, :4] = -100  # prompts
    targets[2, 8:] = -100
    return ids, mask, (targets != -100).nonzero(as_tuple=True), targets


def _saved_with_width(fn: object, width: int) -> int:
    """Elements of the float tensors of last dimension `width` (the vocabulary) that the graph
    keeps for the backward while running fn (a checkpoint keeps its own, not these)."""
    kept = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point() and t.dim() >= 1 and t.shape[-1] == width:
            kept[0] += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()  # type: ignore[operator]
    return kept[0]


def test_chunked_head_gives_the_same_values_and_gradients(model: Any) -> None:
    ids, mask, where, targets = _batch()
    vocab = model.config.vocab_size
    results = []
    for chunk in (4096, 5):  # one chunk (as ever) / many, each under a checkpoint
        model.zero_grad(set_to_none=True)
        values = shortcut_values(model, ids, mask, where, targets, chunk)
        values.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((values.detach(), grads))
    (one, one_grads), (many, many_grads) = results
    with torch.no_grad():  # no checkpoint without gradients: the same values, bit for bit
        assert torch.equal(many, shortcut_values(model, ids, mask, where, targets, 5))
    assert torch.allclose(one, many, rtol=1e-6, atol=1e-6)  # other matmul shapes: rounding
    scale = max(float(g.abs().max()) for g in one_grads.values())
    for name in one_grads:  # to rounding, relative to the largest gradient entry
        assert torch.allclose(one_grads[name], many_grads[name], rtol=1e-4, atol=1e-6 * scale)
    m = len(where[0])
    whole = _saved_with_width(
        lambda: shortcut_values(model, ids, mask, where, targets, 4096), vocab
    )
    kept = _saved_with_width(lambda: shortcut_values(model, ids, mask, where, targets, 5), vocab)
    assert whole >= m * vocab  # one chunk: its (M, V) log-softmax waits for the backward
    assert kept < 5 * vocab  # chunks: no (chunk, V) logits wait for the backward


def test_the_fallback_matches_the_models_own_logits(model: Any) -> None:
    ids, mask, where, targets = _batch()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        expected = -F.cross_entropy(logits[:, :-1][where].float(), targets[where], reduction="none")
        for chunk in (2048, 3):
            got = full_values(model, ids, mask, where, targets, chunk)
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    model.zero_grad(set_to_none=True)
    full_values(model, ids, mask, where, targets, 3).sum().backward()
    assert model.model.embed_tokens.weight.grad is not None  # differentiable through the chunks
