"""The defaults sweep reads validation rows only: its split, and a whole run on a tiny model whose
real test set has been deleted (reading it would fail)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.quality import defaults_sweep as sweep
from benchmarks.quality.report import score_auc
from benchmarks.quality.settings import Setting

POOL = [
    {"prompt": f"Define word {i}.\n", "completion": f"A thing number {i}.", "source": "dict"}
    for i in range(24)
] + [{"prompt": f"Symbol of {i}?\n", "completion": "Xy.", "source": "quiz:a"} for i in range(4)]
VAL = [
    {"prompt": f"Symbol of {90 + i}?\n", "completion": "Ab.", "source": "quiz:a", "subtask": s}
    for i, s in enumerate("aabbaabb")
]


def _data(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, rows in (("pool.jsonl", POOL), ("validation.jsonl", VAL)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    mask = [r["source"] != "dict" for r in POOL]
    meta = {"target_mask": mask, "target_rows": sum(mask), "labels": None, "subtasks": None}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder  # no test.jsonl: the sweep must not need one


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_split_holds_out_half_of_each_subtask_and_is_deterministic(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    out = sweep.split_validation(data, tmp_path / "a")
    select, held = _rows(out / "validation.jsonl"), _rows(out / "test.jsonl")
    assert len(select) == len(held) == 4
    assert sorted(map(json.dumps, select + held)) == sorted(map(json.dumps, VAL))
    for s in "ab":  # stratified: each half holds half of each subtask's rows
        assert sum(r["subtask"] == s for r in select) == sum(r["subtask"] == s for r in held) == 2
    again = sweep.split_validation(data, tmp_path / "b")
    assert (again / "test.jsonl").read_text() == (out / "test.jsonl").read_text()
    other = sweep.split_validation(data, tmp_path / "c", seed=3)
    assert {json.dumps(r) for r in _rows(other / "test.jsonl")} != {json.dumps(r) for r in held}


def test_one_validation_row_cannot_be_split(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    (data / "validation.jsonl").write_text(json.dumps(VAL[0]) + "\n")
    with pytest.raises(ValueError, match="cannot be split"):
        sweep.split_validation(data, tmp_path / "out")


def test_a_sweep_ranks_configs_by_the_held_out_half(
    tiny_causal_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = Setting(
        name="tiny",
        task="causal_lm",
        model=str(tiny_causal_lm_dir),
        target="quiz:a",
        description="tiny",
        target_in_pool=4,
        pool_size=len(POOL),
        n_validation=len(VAL),
        budget=6,
    )
    monkeypatch.setitem(sweep.LARGE_SETTINGS, "tiny", setting)
    monkeypatch.setitem(sweep.LARGE_LR, "tiny", 1e-3)
    work = tmp_path / "work"
    _data(work / "data" / f"tiny-{setting.key()}")
    out = tmp_path / "results"
    monkeypatch.setattr(sweep, "RESULTS", out)
    args = ["--settings", "tiny", "--configs", "bench", "rounds1", "--seeds", "2", "--jobs", "1"]
    assert sweep.main([*args, "--work", str(work), "--results-name", "tiny-sweep"]) == 0
    payload = json.loads((out / "tiny-sweep.json").read_text())
    cells = payload["cells"]
    assert {(c["config"], c["method"]) for c in cells} == {
        (config, m) for config in ("bench", "rounds1") for m in sweep.TOV_METHODS
    }
    for c in cells:
        p = c["paired_vs_random"]
        assert p["seeds"] == 2 and p["diff_se"] is not None, c
        assert c["held_out_loss_mean"] > 0 and c["random_loss_mean"] > 0
    # the configs differ where they should: one round vs the benchmark's two
    records = work / "records"
    stats = [
        json.loads(p.read_text())["stats"] for p in sorted(records.glob("*/sel_tov_all_s0.json"))
    ]
    assert sorted(int(s["rounds"]) for s in stats) == [1, 2]
    # random is fine-tuned once per seed, for every config; embeddings once
    assert len(list(records.glob("*/ft_random_s*_lr*.json"))) == 2
    assert len(list(records.glob("*/embed.json"))) == 1
    ranking = payload["ranking"]
    assert len(ranking) == 2 * len(sweep.TOV_METHODS)
    pcts = [x["mean_pct_vs_random"] for x in ranking]
    assert pcts == sorted(pcts, reverse=True)
    # the score signal: the scores' AUC and each method's target picks, from the records
    mask = np.array([r["source"] != "dict" for r in POOL])
    for c in cells:
        folder = next(
            p.parent
            for p in records.glob("*/sel_tov_all_s0.json")
            if _rounds(p) == (1 if c["config"] == "rounds1" else 2)
        )
        aucs, picks = [], []
        for seed in range(2):
            aucs.append(np.load(folder / f"sel_tov_all_s{seed}.npz")["scores"])
            chosen = json.loads((folder / f"sel_tov_all_s{seed}.json").read_text())
            picks.append(int(mask[chosen["selections"][c["method"]]].sum()))
        assert c["target_rows"] == 4 and c["target_picked"] == pytest.approx(np.mean(picks))
        expected = np.mean([score_auc(a, mask) for a in aucs])
        assert c["score_auc"] == pytest.approx(expected) and 0 <= c["score_auc"] <= 1
    md = (out / "tiny-sweep.md").read_text()
    assert "validation rows only" in md and "ToV score-only, 1 length bin" in md
    assert "Score signal" in md and "| tiny | rounds1 | 4 |" in md


def _rounds(record: Path) -> int:
    return int(json.loads(record.read_text())["stats"]["rounds"])


def test_score_auc_ranks_target_rows_and_leaves_nan_out() -> None:
    mask = np.array([True, False, False, True, False])
    assert score_auc(np.array([3.0, 2.0, 1.0, np.nan, 0.0]), mask) == 1.0
    assert score_auc(np.array([0.0, 2.0, 1.0, 5.0, 3.0]), mask) == pytest.approx(0.5)
    assert score_auc(np.array([1.0, 1.0, 1.0, 1.0, 1.0]), mask) == 0.5  # ties count half
    assert score_auc(np.array([np.nan, 1.0, 2.0, np.nan, 0.0]), mask) is None
