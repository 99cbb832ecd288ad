"""Config validation and the documented defaults for |U| and L."""

from __future__ import annotations

import pytest

from tov_engine import JobConfig, LessSettings, LoraSettings, SelectionConfig, ToVConfig


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: SelectionConfig(budget=0), "budget must be > 0"),
        (lambda: SelectionConfig(budget=2.5), "must be whole"),
        (lambda: SelectionConfig(budget=float("nan")), "finite"),
        (lambda: SelectionConfig(strategy="top"), "strategy"),
        (lambda: SelectionConfig(num_bins=0), "num_bins"),
        (lambda: SelectionConfig(min_per_bin=-1), "min_per_bin"),
        (lambda: ToVConfig(token_score="max"), "token_score"),
        (lambda: LoraSettings(rank=0), "rank"),
        (lambda: LoraSettings(dropout=1.0), "dropout"),
        (lambda: LoraSettings(target_modules=()), "target_modules"),
        (lambda: ToVConfig(variant="C"), "variant"),
        (lambda: ToVConfig(score_fn="max"), "score_fn"),
        (lambda: ToVConfig(rounds=0), "rounds"),
        (lambda: ToVConfig(base_size=0), "base_size"),
        (lambda: ToVConfig(learning_rate=0), "learning_rate"),
        (lambda: JobConfig(task="seq2seq"), "task"),
        (lambda: JobConfig(method="best"), "method"),
        (lambda: JobConfig(seed=-1), "seed"),
        (lambda: JobConfig(max_length=1), "max_length"),
        (lambda: JobConfig(device="tpu"), "device"),
        (lambda: LessSettings(warmup_fraction=0), "warmup_fraction"),
    ],
)
def test_invalid_values_raise_value_error(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_budget_resolution() -> None:
    assert SelectionConfig(budget=0.1).resolve_budget(1000) == 100
    assert SelectionConfig(budget=0.1).resolve_budget(5) == 1  # never zero
    assert SelectionConfig(budget=0.25).resolve_budget(10) == 3  # 2.5 rounds half up
    assert SelectionConfig(budget=40).resolve_budget(10) == 40  # the caller refuses it


def test_base_size_and_rounds_defaults() -> None:
    cfg = ToVConfig()
    assert cfg.resolve_base_size(8192, 100_000) == 4096  # paper: |U| = n / 2
    assert cfg.resolve_base_size(100, 60) == 30  # at most half the pool
    assert cfg.resolve_base_size(1, 10) == 1  # at least one
    assert cfg.resolve_rounds(4096) == 4  # paper: 16384 / |U|
    assert cfg.resolve_rounds(50_000) == 1
    assert cfg.resolve_rounds(10) == 8  # capped for small U
    assert ToVConfig(rounds=3, base_size=7).resolve_rounds(7) == 3


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        JobConfig().seed = 1  # type: ignore[misc]
