"""The leakage check: planted exact and near duplicates are all found, the demo has none, and an
excluded row is never selected (by score or at random, by every method)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tov_engine import JobConfig, LessSettings, SelectionConfig, ToVConfig
from tov_engine.cli import main as cli_main
from tov_engine.errors import ConfigError
from tov_engine.leakage import (
    LeakageConfig,
    find_leaks,
    job_references,
    normalise,
    select_excluding,
    select_random_excluding,
    select_top_excluding,
)
from tov_engine.run import run_multi_target, run_selection
from tov_formats import row_text

DEMO = Path(__file__).resolve().parents[2] / "demo" / "data"
WORDS = [
    "river",
    "mountain",
    "lantern",
    "copper",
    "violet",
    "harbor",
    "meadow",
    "thunder",
    "pencil",
    "garden",
    "orbit",
    "velvet",
    "canyon",
    "marble",
    "falcon",
    "glacier",
    "ribbon",
    "saddle",
    "tunnel",
    "willow",
    "anchor",
    "beacon",
    "cedar",
    "dune",
    "ember",
    "fjord",
    "grove",
    "hazel",
    "island",
    "jasmine",
    "kettle",
    "lagoon",
    "mosaic",
    "nectar",
    "oasis",
    "prairie",
    "quartz",
    "reef",
    "summit",
    "tundra",
    "umber",
    "valley",
    "wharf",
    "yarrow",
    "zephyr",
    "amber",
    "basalt",
    "cobalt",
    "delta",
]


def _paragraph(rng: random.Random, words: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _variants(text: str, rng: random.Random) -> dict[str, str]:
    """A row's planted copies: case, whitespace, punctuation, and 1 to 3 changed words."""
    words = text.rstrip(".").split()

    def changed(k: int) -> str:
        out = list(words)
        for pos in rng.sample(range(2, len(out) - 2, 7), k):  # spread out, not at the ends
            out[pos] = "xylophone" + str(pos)
        return " ".join(out) + "."

    exact = {
        "case": text.upper(),
        "whitespace": re.sub(" ", "  \t", text).replace(".", " .\n"),
        "punctuation": ", ".join(words[:5]) + "! " + " ".join(words[5:]) + "?!",
    }
    if len(words) < 20:  # a changed word in a short row is a different row
        return exact
    return {**exact, "one_word": changed(1), "two_words": changed(2), "three_words": changed(3)}


def _plant(tmp_path: Path, demo_rows: int) -> dict[str, Any]:
    """A pool: the demo's first `demo_rows` rows plus planted copies of validation and test-set
    rows, shuffled; "expected" maps each planted row to (source, matched row, kind)."""
    rng = random.Random(7)
    validation = [{"prompt": "Describe:", "completion": _paragraph(rng)} for _ in range(4)]
    test_set = [{"prompt": "Explain:", "completion": _paragraph(rng, 45)} for _ in range(4)]
    demo_validation = [json.loads(x) for x in (DEMO / "validation.jsonl").read_text().splitlines()]
    validation += demo_validation[:3]  # short rows: their case/space/punctuation copies are exact
    pool = [json.loads(line) for line in (DEMO / "pool.jsonl").read_text().splitlines()]
    pool = pool[:demo_rows]
    expected: dict[int, tuple[str, int, str]] = {}  # pool index -> (source, matched row, kind)
    for source, rows in (("validation", validation), ("decontaminate", test_set)):
        for j, row in enumerate(rows):
            for name, text in _variants(row["completion"], rng).items():
                kind = "near" if name.endswith(("word", "words")) else "exact"
                expected[len(pool)] = (source, j, kind)
                pool.append({"prompt": row["prompt"].lower(), "completion": text})
    order = list(range(len(pool)))
    rng.shuffle(order)
    moved = {old: new for new, old in enumerate(order)}
    pool = [pool[old] for old in order]
    return {
        "pool": _write_jsonl(tmp_path / "pool.jsonl", pool),
        "validation": _write_jsonl(tmp_path / "validation.jsonl", validation),
        "test": _write_jsonl(tmp_path / "test.jsonl", test_set),
        "expected": {moved[i]: e for i, e in expected.items()},
        "size": len(pool),
    }


@pytest.fixture()
def planted(tmp_path: Path) -> dict[str, Any]:
    """The whole demo pool (240 rows) with the planted copies."""
    return _plant(tmp_path, 240)


@pytest.fixture()
def small_planted(tmp_path: Path) -> dict[str, Any]:
    """30 demo rows with the planted copies: the method runs stay short."""
    return _plant(tmp_path, 30)


def test_every_planted_duplicate_is_found_and_nothing_else(planted: dict[str, Any]) -> None:
    refs = job_references(planted["validation"], [planted["test"]])
    report = find_leaks(planted["pool"], refs, LeakageConfig())
    found = {x.pool_index: (x.source, x.match_index, x.kind) for x in report.leaks}
    assert found == planted["expected"]
    assert len(report.leaks) == len(found)  # one reference matched per planted row
    for leak in report.leaks:
        assert leak.similarity == 1.0 if leak.kind == "exact" else 0.6 <= leak.similarity < 1
        assert leak.excluded == (leak.source == "decontaminate")  # the defaults
        assert leak.pool_preview and leak.match_preview
    assert report.excluded.sum() == sum(1 for s, _, _ in found.values() if s == "decontaminate")
    stats = report.stats()
    assert stats["rows"] == len(found) and stats["exact"] + stats["near"] == len(found)


def test_the_demo_pool_has_no_leak_of_the_demo_validation_or_test_set() -> None:
    refs = job_references(DEMO / "validation.jsonl", [DEMO / "test.jsonl"])
    report = find_leaks(DEMO / "pool.jsonl", refs, LeakageConfig())
    assert report.leaks == ()
    assert not report.excluded.any() and len(report.excluded) == 240


def test_modes_and_threshold(planted: dict[str, Any]) -> None:
    refs = job_references(planted["validation"], [planted["test"]])
    both = find_leaks(
        planted["pool"], refs, LeakageConfig(validation="exclude", decontaminate="report")
    )
    assert all(x.excluded == (x.source == "validation") for x in both.leaks)
    strict = find_leaks(planted["pool"], refs, LeakageConfig(threshold=1.0))
    assert strict.leaks and all(x.kind == "exact" for x in strict.leaks)
    with pytest.raises(ConfigError, match=r"leakage\.validation"):
        LeakageConfig(validation="drop")
    with pytest.raises(ConfigError, match="threshold"):
        LeakageConfig(threshold=1.5)


def test_normalisation() -> None:
    assert normalise("  \uff28\uff45llo,\tWORLD!!  ") == "hello world"
    assert normalise("Straße — «quoted»") == "strasse quoted"


def test_every_format_and_file_kind(tmp_path: Path) -> None:
    """Chat, text and token classification rows; CSV and Parquet references."""
    rng = random.Random(3)
    text = _paragraph(rng)
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": text}]}
    assert row_text(chat) == f"Hi\n{text}"
    tokens = {"tokens": text.split(), "tags": ["O"] * len(text.split())}
    assert row_text(tokens) == text
    pool = _write_jsonl(
        tmp_path / "pool.jsonl", [{"text": _paragraph(rng)}, {"text": "hi " + text}]
    )
    table = pa.table({"text": [text.upper()]})
    pacsv.write_csv(table, tmp_path / "ref.csv")
    pq.write_table(table, tmp_path / "ref.parquet")
    chats = _write_jsonl(tmp_path / "chat.jsonl", [chat])
    for ref in ("ref.csv", "ref.parquet", "chat.jsonl"):
        report = find_leaks(pool, job_references(tmp_path / ref), LeakageConfig())
        assert [x.pool_index for x in report.leaks] == [1], ref
    tagged = _write_jsonl(tmp_path / "tagged.jsonl", [tokens, {"tokens": ["a"], "tags": ["O"]}])
    report = find_leaks(tagged, job_references(chats), LeakageConfig())
    assert [(x.pool_index, x.kind) for x in report.leaks] == [(0, "near")]


@pytest.mark.parametrize("strategy", ["score+random", "score-only"])
def test_excluded_rows_are_never_selected(strategy: str) -> None:
    rng = np.random.default_rng(0)
    size = 400
    scores = rng.normal(size=size).astype(np.float32)
    base = np.sort(rng.choice(size, 50, replace=False))
    scores[base] = np.nan
    lengths = rng.integers(1, 300, size)
    for trial in range(20):
        excluded = np.zeros(size, dtype=bool)
        # the best-scored rows and some of U: what the selection would pick first
        excluded[np.argsort(-np.nan_to_num(scores, nan=-9))[: 10 + trial]] = True
        excluded[base[: trial * 2]] = True
        config = SelectionConfig(budget=120, strategy=strategy)
        chosen = select_excluding(
            excluded, scores=scores, lengths=lengths, base_indices=base, config=config, seed=trial
        )
        assert len(chosen.indices) == 120 and len(set(chosen.indices.tolist())) == 120
        assert not excluded[chosen.indices].any()
        if strategy == "score+random":
            assert chosen.sources.count("random") == 60
        top = select_top_excluding(excluded, scores=scores, n=100)
        assert len(top.indices) == 100 and not excluded[top.indices].any()
        picked = select_random_excluding(excluded, pool_size=size, n=300, seed=trial)
        assert len(picked.indices) == 300 and not excluded[picked.indices].any()
    with pytest.raises(ConfigError, match="left after excluding"):
        select_random_excluding(np.ones(size, dtype=bool), pool_size=size, n=1, seed=0)


def test_no_exclusion_changes_nothing() -> None:
    from tov_engine.selection import select

    rng = np.random.default_rng(1)
    scores = rng.normal(size=200).astype(np.float32)
    lengths = rng.integers(1, 99, 200)
    kw: dict[str, Any] = dict(scores=scores, lengths=lengths, base_indices=np.arange(20), seed=4)
    config = SelectionConfig(budget=40)
    plain = select(config=config, **kw)
    same = select_excluding(np.zeros(200, dtype=bool), config=config, **kw)
    assert plain.indices.tolist() == same.indices.tolist()


def _config(method: str, budget: int) -> JobConfig:
    tov = ToVConfig(rounds=1, batch_size=8, tokens_per_batch=2048)
    less = LessSettings(warmup_fraction=0.1, epochs=1, projection_dim=64)
    return JobConfig(
        less=less,
        method=method,
        tov=tov,
        selection=SelectionConfig(budget=budget),
        device="cpu",
        max_length=96,
        seed=3,
    )


@pytest.mark.parametrize("method", ["random", "tov", "uncertainty", "less"])
def test_every_method_skips_excluded_rows(
    small_planted: dict[str, Any], tiny_causal_lm_dir: Path, method: str
) -> None:
    """Nearly the whole pool is the budget, so only the exclusion keeps leaked rows out."""
    decont = {i for i, (s, _, _) in small_planted["expected"].items() if s == "decontaminate"}
    budget = small_planted["size"] - len(decont) - 5
    outcome = run_selection(
        pool_path=small_planted["pool"],
        validation_path=small_planted["validation"],
        model=tiny_causal_lm_dir,
        config=_config(method, budget),
        decontaminate_against=[small_planted["test"]],
    )
    picked = set(outcome.selection.indices.tolist())
    assert len(picked) == budget and not picked & decont
    assert {x.pool_index for x in outcome.leaks} == set(small_planted["expected"])
    assert outcome.stats["leaks"]["excluded"] == len(decont)
    validation_rows = {i for i, (s, _, _) in small_planted["expected"].items() if s == "validation"}
    assert picked & validation_rows  # "report": listed, still selectable


def test_multi_target_excludes_in_every_target(
    small_planted: dict[str, Any], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    other = _write_jsonl(tmp_path / "other.jsonl", [{"prompt": "q", "completion": "a b c d"}])
    decont = {i for i, (s, _, _) in small_planted["expected"].items() if s == "decontaminate"}
    outcomes = run_multi_target(
        pool_path=small_planted["pool"],
        validation_paths=[small_planted["validation"], other],
        model=tiny_causal_lm_dir,
        config=_config("tov", 20),
        decontaminate_against=[small_planted["test"]],
        leakage=LeakageConfig(validation="exclude"),
    )
    first, second = outcomes
    assert not set(first.selection.indices.tolist()) & set(small_planted["expected"])
    assert {x.source for x in second.leaks} == {"decontaminate"}
    assert not set(second.selection.indices.tolist()) & decont


def test_cli_writes_leaks_and_counts(
    small_planted: dict[str, Any], tiny_causal_lm_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    leaks_out = tmp_path / "leaks.jsonl"
    code = cli_main(
        [
            "select",
            "--pool", str(small_planted["pool"]),
            "--validation", str(small_planted["validation"]),
            "--model", str(tiny_causal_lm_dir),
            "--budget", "30",
            "--method", "random",
            "--out", str(tmp_path / "sel.jsonl"),
            "--decontaminate-against", str(small_planted["test"]),
            "--leaks-out", str(leaks_out),
            "--leakage-validation", "exclude",
        ]
    )  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in leaks_out.read_text().splitlines()]
    assert {r["pool_index"] for r in rows} == set(small_planted["expected"])
    assert all(r["excluded"] for r in rows)
    picked = {json.loads(x)["index"] for x in (tmp_path / "sel.jsonl").read_text().splitlines()}
    assert not picked & set(small_planted["expected"])
    out = capsys.readouterr().out
    assert f"leaks: {len(small_planted['expected'])} pool rows" in out
