"""Large mode's runs and report end to end on a tiny random model (seconds, no real data): RDS+,
ToV's three strategies from one run (score+diverse from the setting's one embedding job), the
oracle only, two seeds, a multi-target test set with a `subtask` field; the report's paired
statistics, the per-setting verdict and the per-subtask losses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.quality import report, run
from benchmarks.quality.settings import Setting

POOL = (
    [
        {"prompt": f"Define word {i}.\n", "completion": f"A thing number {i}.", "source": "dict"}
        for i in range(30)
    ]
    + [{"prompt": f"Symbol of {i}?\n", "completion": "Xy.", "source": "quiz:a"} for i in range(3)]
    + [{"prompt": f"Latin {i}?\n", "completion": "Word.", "source": "quiz:b"} for i in range(3)]
)
VAL = [
    {"prompt": "Symbol of 99?\n", "completion": "Ab.", "source": "quiz:a", "subtask": "a"},
    {"prompt": "Latin 98?\n", "completion": "Cat.", "source": "quiz:b", "subtask": "b"},
] * 2
TEST = [
    {"prompt": "Symbol of 77?\n", "completion": "Cd.", "source": "quiz:a", "subtask": "a"},
    {"prompt": "Latin 76?\n", "completion": "Dog.", "source": "quiz:b", "subtask": "b"},
    {"prompt": "Latin 75?\n", "completion": "Sun.", "source": "quiz:b", "subtask": "b"},
]


def _write(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, rows in (("pool.jsonl", POOL), ("validation.jsonl", VAL), ("test.jsonl", TEST)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    mask = [r["source"] != "dict" for r in POOL]
    meta = {"target_mask": mask, "target_rows": sum(mask), "labels": None, "subtasks": ["a", "b"]}
    (folder / "meta.json").write_text(json.dumps(meta))


def _tiny_multi(model: Path) -> Setting:
    """A two-target setting over POOL, VAL and TEST on the tiny model."""
    return Setting(
        name="tiny-multi",
        task="causal_lm",
        model=str(model),
        target="quiz:a+quiz:b",
        description="tiny multi-target setting",
        target_in_pool=6,
        pool_size=len(POOL),
        n_validation=len(VAL),
        n_test=len(TEST),
        budget=8,
        subtasks=("quiz:a", "quiz:b"),
    )


def test_large_mode_runs_and_reports_on_a_tiny_model(
    tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    setting = _tiny_multi(tiny_causal_lm_dir)
    mode = run.MODES["large"]
    runs = ("random", "rds", "tov_all")
    bench = run.Bench(
        tmp_path / "work", 1, runs, {"tiny-multi": 1e-3}, run._engine([]), oracles=mode.oracles
    )
    _write(tmp_path / "work" / "data" / f"tiny-multi-{setting.key()}")
    lr = bench.prepare(setting)
    assert (bench.folder(setting) / "embed.npz").exists()  # once per setting, before any seed
    for seed in (0, 1):
        bench.run_seed(setting, seed, lr)
    folder = bench.folder(setting)
    # RDS+ is seed-independent: seed 1 reuses seed 0's selection, and a real seed-1 run agrees
    rds0 = json.loads((folder / "sel_rds_s0.json").read_text())
    rds1 = json.loads((folder / "sel_rds_s1.json").read_text())
    assert rds1["reused_from_seed"] == 0 and rds1["selections"] == rds0["selections"]
    spec = bench.selection_spec(setting, "rds", 1)
    real = run.run_child(bench.ctx, "selection_job", spec, tmp_path / "real_rds_s1.json")
    assert real["selections"] == rds0["selections"]
    out = tmp_path / "results"
    report.write(bench, [setting], "large", 2, 1.0, out_dir=out, name="quality-large")
    (only,) = json.loads((out / "quality-large.json").read_text())["settings"]
    methods = only["methods"]
    assert set(methods) == {
        "random",
        "rds",
        "tov_score_random",
        "tov_score_only",
        "tov_score_diverse",
        "tov_score_only_1bin",
        "oracle",
    }
    paired = only["paired_vs_random"]
    assert set(paired) == set(methods) - {"random"}
    for name, p in paired.items():
        assert p["seeds"] == 2 and p["diff_se"] is not None and p["diff_se"] >= 0, name
        assert p["improvement_pct_mean"] == pytest.approx(methods[name]["improvement_pct_mean"])
    ahead = only["tov_best_ahead_of_random_by_one_se"]
    assert ahead["method"] in {"tov_score_random", "tov_score_only", "tov_score_diverse"}
    assert isinstance(ahead["holds"], bool)
    assert ahead["holds"] == (ahead["diff_mean"] > ahead["diff_se"])
    # score+diverse's cost is its ToV run's plus the setting's embedding job
    embed = json.loads((folder / "embed.json").read_text())
    tov = methods["tov_score_random"]
    assert methods["tov_score_diverse"]["selection_seconds"] == pytest.approx(
        tov["selection_seconds"] + embed["seconds"]
    )
    assert methods["tov_score_diverse"]["peak_rss_mb"] >= tov["peak_rss_mb"]
    assert all(methods[m]["peak_rss_mb"] > 0 for m in methods if m != "oracle")
    # the diverse half differs from the random half (same scores, same score half)
    sel = json.loads((folder / "sel_tov_all_s0.json").read_text())["selections"]
    assert len(sel["tov_score_diverse"]) == len(sel["tov_score_random"]) == setting.budget
    assert sel["tov_score_diverse"][:4] == sel["tov_score_random"][:4]  # the score picks
    # the length-bins sweep: score-only in one bin is the budget's top scores, whatever the length
    scores = np.load(folder / "sel_tov_all_s0.npz")["scores"]
    top = np.argsort(-scores, kind="stable")[: setting.budget]
    assert sorted(sel["tov_score_only_1bin"]) == sorted(int(i) for i in top)
    # every fine-tune reports the validation rows' loss, and the report carries its mean
    assert all(methods[m]["validation_loss_mean"] > 0 for m in methods)
    assert "Validation loss after fine-tuning" in (out / "quality-large.md").read_text()
    by_sub = only["test_loss_by_subtask"]
    assert set(by_sub) == set(methods) and all(set(v) == {"a", "b"} for v in by_sub.values())
    md = (out / "quality-large.md").read_text()
    assert "Large mode" in md and "ahead of random by more than one SE" in md
    assert "Test loss per subtask" in md and "RDS+" in md and "ToV score+diverse" in md
    assert (out / "quality-large_tiny-multi.png").exists()
    assert (out / "quality-large_scores_tiny-multi.png").exists()


def test_run_main_splits_each_seed_in_two_parallel_tasks(
    tiny_causal_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The large mode's scheduling through run.main: two tasks at once, each (setting, seed) as a
    ToV task and a task of the other runs; seed 1's RDS+ waits for seed 0's instead of running
    it a second time at once (one lock per result file)."""
    setting = _tiny_multi(tiny_causal_lm_dir)
    mode = dataclasses.replace(
        run.MODES["large"],
        settings={"tiny-multi": setting},
        runs=("random", "rds", "tov_all"),
        seeds=2,
        fixed_lr={"tiny-multi": 1e-3},
        results="tiny-large",
    )
    monkeypatch.setitem(run.MODES, "tiny", mode)
    monkeypatch.setitem(run.ALL_SETTINGS, "tiny-multi", setting)
    work = tmp_path / "work"
    _write(work / "data" / f"tiny-multi-{setting.key()}")
    out = tmp_path / "results"
    write = report.write
    monkeypatch.setattr(report, "write", lambda *a, **k: write(*a, **k, out_dir=out))
    started: list[str] = []
    real_run_child = run.run_child

    def counting(ctx: Any, fn_name: str, spec: dict[str, Any], path: Path, **kw: Any) -> Any:
        started.append(path.name)
        return real_run_child(ctx, fn_name, spec, path, **kw)

    monkeypatch.setattr(run, "run_child", counting)
    assert run.main(["--mode", "tiny", "--work", str(work), "--threads", "1"]) == 0
    assert started.count("sel_rds_s0.json") == 1 and "sel_rds_s1.json" not in started
    assert started.count("embed.json") == 1
    assert len(started) == len(set(started))  # nothing computed twice
    (only,) = json.loads((out / "tiny-large.json").read_text())["settings"]
    assert set(only["methods"]) == {
        "random",
        "rds",
        "tov_score_random",
        "tov_score_only",
        "tov_score_diverse",
        "tov_score_only_1bin",
        "oracle",
    }
    assert all(p["seeds"] == 2 for p in only["paired_vs_random"].values())
