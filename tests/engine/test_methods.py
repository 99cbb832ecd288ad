"""Token classification, the LESS baseline, other input formats, and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import TARGET, TARGET_INDEX, _pool
from tov_engine import (
    ConfigError,
    JobConfig,
    LessSettings,
    SelectionConfig,
    ToVConfig,
    run_selection,
)
from tov_engine.cli import main
from tov_plan.rules import draw_base

PLAIN = {"tokens": ["The", "cat", "sat", "on", "the", "mat"], "tags": ["O"] * 6}
ENTITY = {
    "tokens": ["Alice", "works", "at", "Google", "in", "London"],
    "tags": ["B-PER", "O", "O", "B-ORG", "O", "B-LOC"],
}


def test_token_classification_finds_the_entity_row(
    write_jsonl: WriteRows, tiny_token_classifier_dir: Path
) -> None:
    base = set(draw_base(40, 8, 5).tolist())
    target = next(i for i in range(40) if i not in base)
    pool = [ENTITY if i == target else PLAIN for i in range(40)]
    config = JobConfig(
        task="token_classification",
        seed=5,
        selection=SelectionConfig(budget=16),
        tov=ToVConfig(rounds=2, base_size=8, learning_rate=1e-3, val_lr_factor=1.0, batch_size=4),
    )
    out = run_selection(
        pool_path=write_jsonl("p.jsonl", pool),
        validation_path=write_jsonl("v.jsonl", [ENTITY] * 4),
        model=tiny_token_classifier_dir,
        config=config,
    )
    assert int(np.nanargmax(out.scores)) == target
    assert out.selection.indices[0] == target
    assert out.lengths[target] == 6  # one loss token per word, sub-words not counted twice

    # tov.token_score reaches the scoring: the paper's per-row mean gives other scores.
    mean = run_selection(
        pool_path=write_jsonl("p.jsonl", pool),
        validation_path=write_jsonl("v.jsonl", [ENTITY] * 4),
        model=tiny_token_classifier_dir,
        config=dataclasses.replace(config, tov=dataclasses.replace(config.tov, token_score="mean")),
    )
    scored = ~np.isnan(out.scores)
    assert np.array_equal(scored, ~np.isnan(mean.scores))
    assert not np.allclose(out.scores[scored], mean.scores[scored])


def test_less_ranks_the_validation_like_row_first(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    pool = write_jsonl("p.jsonl", _pool())
    val = write_jsonl(
        "v.jsonl",
        [
            {**TARGET, "subtask": "fr"},
            {**TARGET, "subtask": "fr"},
            {"prompt": "2+2?", "completion": "Four.", "subtask": "math"},
        ],
    )
    config = JobConfig(
        method="less",
        selection=SelectionConfig(budget=5),
        seed=1,
        tov=ToVConfig(learning_rate=1e-3, batch_size=4),
        less=LessSettings(warmup_fraction=0.1, epochs=2, projection_dim=256),
    )
    out = run_selection(
        pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
    )
    assert out.selection.indices[0] == TARGET_INDEX
    assert len(out.selection.indices) == 5 and out.selection.sources == ["score"] * 5
    assert out.base_indices.size == 0 and np.isfinite(out.scores).all()
    assert np.all(np.abs(out.scores) <= 1.0 + 1e-5)  # LR-weighted mean of cosines
    assert out.stats["subtasks"] == 2 and out.stats["projection_dim"] == 256


def test_less_needs_lora(write_jsonl: WriteRows, tiny_causal_lm_dir: Path) -> None:
    from tov_engine import LoraSettings

    config = JobConfig(method="less", tov=ToVConfig(lora=LoraSettings(enabled=False)))
    rows = write_jsonl("p.jsonl", _pool())
    with pytest.raises(ConfigError, match="LoRA"):
        run_selection(pool_path=rows, validation_path=rows, model=tiny_causal_lm_dir, config=config)


def test_cli_parquet_in_jsonl_and_csv_out(
    tmp_path: Path, tiny_causal_lm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.DataFrame(_pool()).to_parquet(tmp_path / "pool.parquet")
    pd.DataFrame([TARGET] * 3).to_csv(tmp_path / "val.csv", index=False)
    out, scores = tmp_path / "sel.jsonl", tmp_path / "scores.csv"
    argv = [
        "select",
        "--pool",
        str(tmp_path / "pool.parquet"),
        "--validation",
        str(tmp_path / "val.csv"),
        "--model",
        str(tiny_causal_lm_dir),
        "--budget",
        "0.2",
        "--out",
        str(out),
        "--scores-out",
        str(scores),
        "--rounds",
        "1",
        "--seed",
        "4",
        "--learning-rate",
        "1e-3",
        "--strategy",
        "score-only",
        "--num-bins",
        "2",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10
    assert list(rows[0]) == ["index", "score", "source", "reason", "bin", "bin_rank", "bin_quota"]
    assert rows[0]["index"] == TARGET_INDEX and {r["source"] for r in rows} == {"score"}
    table = pd.read_csv(scores)
    assert len(table) == 49 - 5
    assert list(table.columns) == [
        "index", "score", "length", "loss_before", "loss_after", "bin", "bin_rank"
    ]  # fmt: skip
    assert "selected 10 of 49 rows" in capsys.readouterr().out


def test_cli_reports_errors_with_exit_code(
    tmp_path: Path, tiny_causal_lm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": 3}\n')
    argv = [
        "select",
        "--pool",
        str(bad),
        "--validation",
        str(bad),
        "--model",
        str(tiny_causal_lm_dir),
        "--budget",
        "1",
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    assert main(argv) == 2
    assert "row 2, field 'text'" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "o.txt")]) == 2
