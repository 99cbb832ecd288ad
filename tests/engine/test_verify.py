"""Verification of a selection: the held-out split, and fresh fine-tunes on the selection and on
random subsets measured on held-out validation rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.engine.conftest import WriteRows
from tov_engine import Cancelled, ConfigError, JobConfig
from tov_engine.config import VerifySettings
from tov_engine.progress import ProgressEvent
from tov_engine.verify import holdout_split, random_arm, split_validation, verify_selection

FILLER = [
    {"prompt": f"Question {i}: say something.", "completion": f"Filler sentence number {i}."}
    for i in range(40)
]
TARGETS = [
    {"prompt": f"Translate to French: good morning {i}.", "completion": "Bonjour. Bonjour."}
    for i in range(8)
]
POOL = FILLER + TARGETS  # the target-like rows are the last eight
TARGET_ROWS = np.arange(len(FILLER), len(POOL))


def test_holdout_split_is_seeded_and_keeps_both_sides() -> None:
    kept, held = holdout_split(8, 0.25, seed=3)
    assert len(held) == 2 and len(kept) == 6
    assert sorted(kept.tolist() + held.tolist()) == list(range(8))
    again_kept, again_held = holdout_split(8, 0.25, seed=3)
    assert held.tolist() == again_held.tolist() and kept.tolist() == again_kept.tolist()
    assert len(holdout_split(3, 0.01, seed=0)[1]) == 1  # at least one held out
    assert len(holdout_split(3, 0.99, seed=0)[0]) == 1  # at least one kept
    with pytest.raises(ConfigError, match="at least 2 validation rows"):
        holdout_split(1, 0.5, seed=0)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_split_validation_writes_both_halves_in_any_input_format(tmp_path: Path, fmt: str) -> None:
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    source = tmp_path / f"val.{fmt}"
    frame = pd.DataFrame(rows)
    if fmt == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        frame.to_csv(source, index=False)
    else:
        frame.to_parquet(source)
    split = split_validation(source, tmp_path / "split", holdout=0.3, seed=1)
    kept = [json.loads(x) for x in split.kept_path.read_text().splitlines()]
    held = [json.loads(x) for x in split.holdout_path.read_text().splitlines()]
    assert len(held) == 3 and len(kept) == 7
    assert kept == [rows[i] for i in split.kept_rows]
    assert held == [rows[i] for i in split.holdout_rows]


def test_random_arm_is_uniform_distinct_and_seeded() -> None:
    a = random_arm(100, 10, job_seed=1, seed=0)
    assert len(set(a.tolist())) == 10 and a.max() < 100
    assert a.tolist() == random_arm(100, 10, job_seed=1, seed=0).tolist()
    assert a.tolist() != random_arm(100, 10, job_seed=1, seed=1).tolist()


def _verify(
    write_jsonl: WriteRows, model: Path, selected: np.ndarray, **kw: object
) -> tuple[object, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    report = verify_selection(
        pool_path=write_jsonl("pool.jsonl", POOL),
        holdout_path=write_jsonl("holdout.jsonl", TARGETS[:2]),
        model=model,
        config=JobConfig(seed=2, device="cpu"),
        selected=selected,
        settings=VerifySettings(seeds=2, epochs=3, batch_size=4, learning_rate=3e-3),
        progress=events.append,
        **kw,  # type: ignore[arg-type]
    )
    return report, events


def test_a_target_selection_beats_random_on_held_out_rows(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    report, events = _verify(write_jsonl, tiny_causal_lm_dir, TARGET_ROWS)
    r = report.to_dict()  # type: ignore[attr-defined]
    assert r["seeds"] == 2 and r["holdout_rows"] == 2 and r["selected_rows"] == 8
    assert len(r["selected_losses"]) == 2 and len(r["random_losses"]) == 2
    # Training on rows like the held-out ones lowers their loss far more than random rows do.
    assert all(s < q for s, q in zip(r["selected_losses"], r["random_losses"], strict=True))
    assert r["improvement"] > 0 and r["improvement_percent"] > 0
    assert r["selected_loss"] < r["base_loss"]
    assert r["improvement"] == pytest.approx(r["random_loss"] - r["selected_loss"])
    assert r["recipe"]["epochs"] == 3
    assert {e.stage for e in events} == {"verify"}
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    again, _ = _verify(write_jsonl, tiny_causal_lm_dir, TARGET_ROWS)
    assert again.to_dict()["selected_losses"] == r["selected_losses"]  # type: ignore[attr-defined]
    assert again.to_dict()["random_losses"] == r["random_losses"]  # type: ignore[attr-defined]


def test_a_filler_selection_does_not_beat_random_by_much(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    """The same check can say no: a selection of filler rows is no better than random."""
    report, _ = _verify(write_jsonl, tiny_causal_lm_dir, np.arange(8))
    targeted, _ = _verify(write_jsonl, tiny_causal_lm_dir, TARGET_ROWS)
    assert report.improvement < targeted.improvement  # type: ignore[attr-defined]


def test_verify_refuses_bad_selections_and_stops_when_cancelled(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        _verify(write_jsonl, tiny_causal_lm_dir, np.array([], dtype=np.int64))
    with pytest.raises(ConfigError, match="fewer than its 48 rows"):
        _verify(write_jsonl, tiny_causal_lm_dir, np.arange(48))
    with pytest.raises(Cancelled):
        _verify(write_jsonl, tiny_causal_lm_dir, TARGET_ROWS, should_cancel=lambda: True)


def test_verify_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="holdout"):
        VerifySettings(holdout=1.0)
    with pytest.raises(ValueError, match="seeds"):
        VerifySettings(seeds=0)
    with pytest.raises(ValueError, match="learning_rate"):
        VerifySettings(learning_rate=0.0)
