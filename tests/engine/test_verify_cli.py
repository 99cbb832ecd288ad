"""`tov-select select --verify-holdout`: the selection runs on the kept validation rows, then the
verification fine-tunes on it and on random subsets and reports the held-out losses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import WriteRows
from tov_engine.cli import main as cli_main

FILLER = [
    {"prompt": f"Question {i}: say something.", "completion": f"Filler sentence number {i}."}
    for i in range(40)
]
TARGETS = [
    {"prompt": f"Translate to French: good morning {i}.", "completion": "Bonjour. Bonjour."}
    for i in range(8)
]
VALIDATION = [
    {"prompt": f"Translate to French: good evening {i}.", "completion": "Bonjour. Bonjour."}
    for i in range(8)
]


def _args(pool: Path, validation: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "select",
        "--pool", str(pool),
        "--validation", str(validation),
        "--model", str(model),
        "--budget", "8",
        "--rounds", "2",
        "--device", "cpu",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_cli_verifies_the_selection_on_held_out_rows(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    pool = write_jsonl("pool.jsonl", FILLER + TARGETS)
    validation = write_jsonl("val.jsonl", VALIDATION)
    report_path, scores = tmp_path / "verify.json", tmp_path / "scores.jsonl"
    args = _args(pool, validation, tiny_causal_lm_dir, tmp_path / "sel.jsonl")
    extra = ["--verify-holdout", "0.25", "--verify-seeds", "2", "--verify-out", str(report_path)]
    code = cli_main([*args, "--scores-out", str(scores), *extra])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["holdout_rows"] == 2 and report["seeds"] == 2  # round(0.25 * 8)
    assert report["selected_rows"] == 8
    assert len(report["selected_losses"]) == 2 and len(report["random_losses"]) == 2
    assert report["improvement"] == pytest.approx(report["random_loss"] - report["selected_loss"])
    assert report["selected_loss"] < report["base_loss"]  # fine-tuning on the selection helped
    out = capsys.readouterr().out
    assert "verify (2 held-out rows, selection saw the other 6, 2 seeds" in out
    assert f"base loss {report['base_loss']:.4f}" in out
    assert f"({report['improvement_percent']:+.2f}%)" in out
    picked = [json.loads(x)["index"] for x in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert len(picked) == 8

    # Without --verify-holdout nothing is held out: the same run prints no verification.
    code = cli_main(_args(pool, validation, tiny_causal_lm_dir, tmp_path / "plain.jsonl"))
    assert code == 0 and "verify (" not in capsys.readouterr().out


def test_cli_refuses_bad_verify_options(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    pool = write_jsonl("pool.jsonl", FILLER + TARGETS)
    validation = write_jsonl("val.jsonl", VALIDATION)
    args = _args(pool, validation, tiny_causal_lm_dir, tmp_path / "sel.jsonl")
    assert cli_main([*args, "--verify-holdout", "1.5"]) == 2
    assert "verify.holdout must be in (0, 1)" in capsys.readouterr().err
    assert cli_main([*args, "--verify-holdout", "0.25", "--verify-seeds", "0"]) == 2
    assert "verify.seeds" in capsys.readouterr().err
    assert cli_main([*args, "--verify-out", str(tmp_path / "v.json")]) == 2
    assert "--verify-out needs --verify-holdout" in capsys.readouterr().err
