"""The dry run against the engine on tiny models: its token counts are the engine's, its planned
passes are the passes a real run makes (counted by a hook on the input embeddings), and its
pool-cache keys are the engine's (a run fills the cache, the dry run then finds it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.conftest import WriteRows
from tov_engine import JobConfig, SelectionConfig, ToVConfig, run_selection
from tov_engine.data.encoding import encode_rows
from tov_engine.data.files import read_rows
from tov_engine.dry_run import estimate
from tov_engine.methods import common, embedding
from tov_engine.model.loading import load_tokenizer
from tov_engine.store import keys
from tov_plan import cache
from tov_plan.tokens import TokenCounter, count_file

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Paris", "is", "capital"]


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def causal_rows(n: int, seed: int = 0, kind: str = "prompt_completion") -> list[dict[str, Any]]:
    """Rows of one format (prompt_completion, chat with a system turn and two exchanges, or
    text) of varied lengths."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if kind == "prompt_completion":
            rows.append({"prompt": _text(rng, 3 + i % 40), "completion": _text(rng, 1 + i % 7)})
        elif kind == "chat":
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": _text(rng, 2 + i % 9)},
                        {"role": "assistant", "content": _text(rng, 1 + i % 5)},
                        {"role": "user", "content": _text(rng, 3)},
                        {"role": "assistant", "content": _text(rng, 2 + i % 4)},
                    ]
                }
            )
        else:
            rows.append({"text": _text(rng, 4 + i % 30)})
    return rows


@pytest.mark.parametrize("kind", ["prompt_completion", "chat", "text"])
@pytest.mark.parametrize("max_length", [512, 24, 9])
def test_token_counts_are_the_engines(
    tiny_causal_lm_dir: Path, write_jsonl: WriteRows, max_length: int, kind: str
) -> None:
    """Every row's tokens and loss-bearing tokens, after truncation, equal the engine's."""
    path = write_jsonl("rows.jsonl", causal_rows(40, kind=kind))
    engine = encode_rows(load_tokenizer(tiny_causal_lm_dir), read_rows(path), max_length=max_length)
    counted = count_file(
        TokenCounter(tiny_causal_lm_dir), path, task="causal_lm", max_length=max_length
    )
    assert np.array_equal(counted.seq_lengths, engine.seq_lengths)
    assert np.array_equal(counted.loss_lengths, engine.loss_lengths)
    assert counted.truncated == int(engine.truncated.sum())
    if max_length == 9:
        assert counted.truncated > 0  # the cut is exercised


def test_tagged_token_counts_are_the_engines(
    tiny_token_classifier_dir: Path, write_jsonl: WriteRows
) -> None:
    rng = np.random.default_rng(1)
    rows = [
        {"tokens": list(rng.choice(WORDS, size=2 + i % 20)), "tags": ["O"] * (2 + i % 20)}
        for i in range(30)
    ]
    path = write_jsonl("tagged.jsonl", rows)
    tokenizer = load_tokenizer(tiny_token_classifier_dir)
    engine = encode_rows(tokenizer, read_rows(path), max_length=12, label_ids={"O": 0})
    counter = TokenCounter(tiny_token_classifier_dir)
    counted = count_file(counter, path, task="token_classification", max_length=12)
    assert np.array_equal(counted.seq_lengths, engine.seq_lengths)
    assert np.array_equal(counted.loss_lengths, engine.loss_lengths)
    assert counted.truncated == int(engine.truncated.sum()) > 0


class PassCounter:
    """Counts what goes through the input embeddings: every forward pass, its rows and padded
    tokens, split into training forwards (grad on, train mode: one backward each) and others."""

    def __init__(self) -> None:
        self.forward_rows = self.backward_rows = self.forward_tokens = self.backward_tokens = 0
        self.forwards = self.backwards = 0

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        rows, width = args[0].shape
        training = torch.is_grad_enabled() and module.training
        self.forwards += 1
        self.forward_rows += rows
        self.forward_tokens += rows * width
        if training:
            self.backwards += 1
            self.backward_rows += rows
            self.backward_tokens += rows * width


def _counted_run(
    monkeypatch: pytest.MonkeyPatch, config: JobConfig, pool: Path, val: Path, model: Path
) -> PassCounter:
    counter = PassCounter()
    build = common.build_surrogate

    def hooked(job: Any) -> Any:
        surrogate = build(job)
        surrogate.model.get_input_embeddings().register_forward_hook(counter)
        return surrogate

    for module in ("tov_engine.methods.tov.run", "tov_engine.methods.uncertainty"):
        monkeypatch.setattr(f"{module}.build_surrogate", hooked)
    run_selection(pool_path=pool, validation_path=val, model=model, config=config)
    return counter


@pytest.mark.parametrize(
    ("method", "variant", "micro"),
    [("tov", "A", 4096), ("tov", "B", 60), ("uncertainty", "A", 4096)],
)
def test_planned_passes_are_the_runs(
    monkeypatch: pytest.MonkeyPatch,
    tiny_causal_lm_dir: Path,
    write_jsonl: WriteRows,
    method: str,
    variant: str,
    micro: int,
) -> None:
    """Forward and backward passes, rows and padded tokens: planned = counted in a real run."""
    pool = write_jsonl("pool.jsonl", causal_rows(40))
    val = write_jsonl("val.jsonl", causal_rows(6, seed=3, kind="chat"))
    config = JobConfig(
        method=method,
        device="cpu",
        max_length=48,
        tov=ToVConfig(
            rounds=2,
            batch_size=4,
            variant=variant,
            tokens_per_batch=200,
            train_tokens_per_micro_batch=micro,
        ),
        selection=SelectionConfig(budget=10),
    )
    counted = _counted_run(monkeypatch, config, pool, val, tiny_causal_lm_dir)
    planned = estimate(config, pool=pool, validation=val, model=tiny_causal_lm_dir)["passes"]
    assert planned["forward_row_passes"] == counted.forward_rows
    assert planned["backward_row_passes"] == counted.backward_rows
    assert planned["forward_batches"] == counted.forwards
    assert planned["backward_batches"] == counted.backwards
    assert planned["backward_tokens"] == counted.backward_tokens
    assert planned["forward_tokens"] == counted.forward_tokens


def test_the_dry_run_finds_what_a_run_cached(
    tiny_causal_lm_dir: Path, write_jsonl: WriteRows, tmp_path: Path
) -> None:
    """The pool-cache keys are the engine's: after a run fills the cache, the dry run finds the
    tokenised pool and round 1's base half (Method A), and plans one base epoch fewer."""
    assert cache.CACHE_FORMAT == keys.CACHE_FORMAT
    pool = write_jsonl("pool.jsonl", causal_rows(30))
    val = write_jsonl("val.jsonl", causal_rows(5, seed=4))
    config = JobConfig(
        device="cpu",
        max_length=48,
        tov=ToVConfig(rounds=2, batch_size=4, tokens_per_batch=200),
        selection=SelectionConfig(budget=8),
    )
    store = tmp_path / "pool-cache"
    kw: dict[str, Any] = {"pool": pool, "validation": val, "model": tiny_causal_lm_dir}
    before = estimate(config, cache_dir=store, **kw)
    assert before["pool_cache"] == {
        "enabled": True,
        "pool_encoding": False,
        "base_rounds": 0,
        "base_rounds_reused": 0,
    }
    run_selection(
        pool_path=pool,
        validation_path=val,
        model=tiny_causal_lm_dir,
        config=config,
        cache_dir=store,
    )
    after = estimate(config, cache_dir=store, **kw)
    assert after["pool_cache"] == {
        "enabled": True,
        "pool_encoding": True,
        "base_rounds": 1,
        "base_rounds_reused": 1,
    }
    base = after["rows"]["base_size"]
    saved = before["passes"]["backward_row_passes"] - after["passes"]["backward_row_passes"]
    assert saved == base  # round 1's base epoch is not run again
    assert after["passes"]["forward_tokens"] < before["passes"]["forward_tokens"]  # no base pass
    assert after["time"]["parts"]["prepare"] < before["time"]["parts"]["prepare"]  # pool cached


def test_the_cli_prints_the_estimate_without_loading_weights(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny_causal_lm_dir: Path,
    write_jsonl: WriteRows,
) -> None:
    from tov_engine import cli
    from tov_engine.model import loading

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dry run must not load the model")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(embedding, "load_model", refuse)
    pool = write_jsonl("pool.jsonl", causal_rows(20))
    val = write_jsonl("val.jsonl", causal_rows(4, seed=2))
    args = ["select", "--pool", str(pool), "--validation", str(val), "--budget", "6"]
    args += ["--model", str(tiny_causal_lm_dir), "--rounds", "2", "--dry-run"]
    assert cli.main([*args, "--device-class", "h100"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["device_class"] == "h100" and estimate["precision"] == "bfloat16"
    assert estimate["rows"]["pool"] == 20 and estimate["fits"] is True
    assert cli.main([*args, "--budget", "30"]) == cli.EXIT_ERROR  # the engine's refusal
    assert "exceeds the pool of 20 rows" in capsys.readouterr().err
