"""Smoke test of the quality benchmark's plumbing on tiny random models (seconds, no real data):
every method selects, every selection fine-tunes, and the report has the promised shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality import plan, report, run
from benchmarks.quality.settings import Setting

POOL = [
    {"prompt": f"Define word {i}.\n", "completion": f"A thing number {i}.", "source": "dict"}
    for i in range(36)
] + [{"prompt": f"Symbol of {i}?\n", "completion": "Xy.", "source": "quiz"} for i in range(4)]


def _write(folder: Path, setting: Setting) -> None:
    folder.mkdir(parents=True)
    rows = {
        "pool.jsonl": POOL,
        "validation.jsonl": [{"prompt": "Symbol of 99?\n", "completion": "Ab."}] * 4,
        "test.jsonl": [{"prompt": "Symbol of 77?\n", "completion": "Cd."}] * 4,
    }
    for name, data in rows.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in data))
    meta = {"target_mask": [r["source"] == "quiz" for r in POOL], "target_rows": 4, "labels": None}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_quality_benchmark_end_to_end_on_a_tiny_model(
    tiny_causal_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = Setting(
        name="tiny",
        task="causal_lm",
        model=str(tiny_causal_lm_dir),  # an absolute path wins over .cache/models
        target="quiz",
        description="tiny smoke setting",
        target_in_pool=4,
        pool_size=len(POOL),
        n_validation=4,
        n_test=4,
        budget=4,
    )
    bench = run.Bench(tmp_path / "work", threads=1)
    _write(tmp_path / "work" / "data" / f"tiny-{setting.key()}", setting)
    monkeypatch.setitem(plan.LR_GRID, "causal_lm", [1e-3])
    monkeypatch.setattr(run, "SWEEP_SEEDS", 1)
    lr = bench.prepare(setting)
    bench.run_seed(setting, 0, lr)
    out = tmp_path / "results"
    report.write(bench, [setting], "smoke", 1, 1.0, out_dir=out)
    payload = json.loads((out / "quality.json").read_text())
    assert set(payload) == {"mode", "generated_at", "settings"}
    (only,) = payload["settings"]
    assert only["name"] == "tiny" and only["task"] == "causal_lm"
    assert set(only["methods"]) == set(plan.METHODS)
    fields = {
        "test_loss_mean",
        "test_loss_std",
        "improvement_pct_mean",
        "oracle_gain_share",
        "selection_seconds",
        "peak_rss_mb",
        "disk_mb",
        "validation_loss_mean",
    }
    for name, m in only["methods"].items():
        assert set(m) == fields, name
        assert m["test_loss_mean"] > 0 and m["validation_loss_mean"] > 0
    assert only["methods"]["tov_score_random"]["selection_seconds"] > 0
    assert only["methods"]["tov_score_random"]["disk_mb"] > 0  # round checkpoints
    assert only["methods"]["oracle"]["selection_seconds"] is None
    assert (out / "quality.md").read_text().startswith("# Quality benchmark")
    assert (out / "quality_tiny.png").exists() and (out / "quality_scores_tiny.png").exists()
