"""RDS+: position-weighted embeddings, cosine similarity, round-robin over validation rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.engine.conftest import WriteRows
from tov_engine import JobConfig, SelectionConfig, run_selection
from tov_engine.methods.rds import round_robin_order

FILLER = [
    {"prompt": f"Question {i}: say something.", "completion": f"Filler sentence number {i}."}
    for i in range(40)
]
TARGETS = [
    {"prompt": "Translate to French: good morning.", "completion": "Bonjour."},
    {"prompt": "Name a colour of the sky.", "completion": "Blue, mostly blue."},
    {"prompt": "What is seven times six?", "completion": "Forty-two."},
]
COPIES = [5, 17, 33]  # where the exact copies of the validation rows sit in the pool


def _pool() -> list[dict[str, str]]:
    rows = list(FILLER)
    for index, row in zip(COPIES, TARGETS, strict=True):
        rows.insert(index, row)
    return rows


def test_round_robin_takes_each_validation_rows_best_in_turn() -> None:
    # 4 pool rows x 2 validation rows.
    sim = np.array([[0.9, 0.8], [0.1, 0.95], [0.5, 0.2], [0.3, 0.1]], dtype=np.float32)
    order = round_robin_order(sim, np.ones(4, dtype=bool))
    # v0 takes row 0, v1 row 1, v0 row 2 (its next best), v1 row 3 (all that is left).
    assert order.tolist() == [0, 1, 2, 3]
    # Row 0 not eligible: v0 takes row 2, v1 row 1, then row 3.
    eligible = np.array([False, True, True, True])
    assert round_robin_order(sim, eligible).tolist() == [2, 1, 3]
    # A row both want is taken once; v1 moves on to its next best.
    sim2 = np.array([[0.9, 0.9], [0.1, 0.5], [0.2, 0.1]], dtype=np.float32)
    assert round_robin_order(sim2, np.ones(3, dtype=bool)).tolist() == [0, 1, 2]


def test_rds_picks_the_exact_copies_of_validation_rows_first(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    config = JobConfig(method="rds", selection=SelectionConfig(budget=3), seed=1, device="cpu")
    kwargs = dict(
        pool_path=write_jsonl("pool.jsonl", _pool()),
        validation_path=write_jsonl("val.jsonl", TARGETS),
        model=tiny_causal_lm_dir,
        config=config,
        cache_dir=tmp_path / "cache",
    )
    out = run_selection(**kwargs)  # type: ignore[arg-type]
    assert sorted(out.selection.indices.tolist()) == COPIES
    assert set(out.selection.sources) == {"score"}
    # The score is the round-robin order: the copies rank highest, every eligible row is ranked.
    top = np.argsort(-out.scores)[:3]
    assert sorted(top.tolist()) == COPIES
    assert np.isfinite(out.scores).all()
    assert out.stats["pool_embeddings_reused"] is False

    again = run_selection(**kwargs)  # type: ignore[arg-type]
    assert again.stats["pool_embeddings_reused"] is True  # the pool cache held the embeddings
    np.testing.assert_array_equal(again.scores, out.scores)
    assert again.selection.indices.tolist() == out.selection.indices.tolist()


def test_rds_embeddings_do_not_depend_on_padding(tiny_causal_lm_dir: Path) -> None:
    """A row embedded alone and beside a longer row gives the same vector."""
    import torch

    from tov_engine.data.encoding import encode_rows
    from tov_engine.methods.embedding import embed
    from tov_engine.model.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_causal_lm_dir)
    encoded = encode_rows(
        tokenizer, [TARGETS[2], FILLER[0] | {"completion": "a much longer " * 8}], max_length=128
    )
    model = load_model(tiny_causal_lm_dir, task="causal_lm", device=torch.device("cpu"))
    model.eval()
    pad = int(tokenizer.pad_token_id)
    alone = embed(model, encoded, np.array([0]), pad_id=pad, tokens_per_batch=4096)
    together = embed(model, encoded, np.array([0, 1]), pad_id=pad, tokens_per_batch=4096)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
