"""The pool cache: identical results with and without it, what each method reuses, verification
of entries before use, and atomic publication."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import TARGET, _pool
from tov_engine import (
    Cancelled,
    JobConfig,
    LoraSettings,
    SelectionConfig,
    SelectionOutcome,
    ToVConfig,
    run_selection,
)
from tov_engine.store.entries import EntryStore

OTHER = {"prompt": "Question: who wrote Hamlet?", "completion": "William Shakespeare wrote it."}


@pytest.fixture
def files(write_jsonl: WriteRows) -> dict[str, Path]:
    return {
        "pool": write_jsonl("pool.jsonl", _pool()),
        "val": write_jsonl("val.jsonl", [TARGET] * 4),
        "val2": write_jsonl("val2.jsonl", [OTHER] * 3),
    }


def _config(**tov: Any) -> JobConfig:
    settings: dict[str, Any] = dict(
        rounds=1, learning_rate=1e-3, val_lr_factor=1.0, batch_size=4, base_size=8
    )
    settings.update(tov)
    return JobConfig(tov=ToVConfig(**settings), selection=SelectionConfig(budget=16), seed=3)


def _run(files: dict[str, Path], val: str, model: Path, config: JobConfig, **kw: Any) -> Any:
    return run_selection(
        pool_path=files["pool"], validation_path=files[val], model=model, config=config, **kw
    )


def _same(a: SelectionOutcome, b: SelectionOutcome) -> None:
    assert np.array_equal(a.scores, b.scores, equal_nan=True)
    assert np.array_equal(a.selection.indices, b.selection.indices)
    assert a.selection.sources == b.selection.sources


@pytest.mark.parametrize(
    "tov,reused",
    [
        (dict(variant="A", rounds=1), 1),
        (dict(variant="A", rounds=2), 1),  # Method A: round 1 starts from theta_val, not shared
        (dict(variant="B", rounds=2), 2),  # Method B: the whole base trajectory is shared
    ],
    ids=["A-L1", "A-L2", "B-L2"],
)
def test_second_target_reuses_the_base_and_matches_an_uncached_run(
    files: dict[str, Path],
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
    tov: dict[str, Any],
    reused: int,
) -> None:
    config, cache = _config(**tov), tmp_path / "cache"
    plain = _run(files, "val2", tiny_causal_lm_dir, config)
    first = _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)
    second = _run(files, "val2", tiny_causal_lm_dir, config, cache_dir=cache)
    assert first.stats["base_rounds_reused"] == 0
    assert second.stats["base_rounds_reused"] == reused
    _same(plain, second)
    again = _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)
    assert int(np.nanargmax(again.scores)) == int(np.nanargmax(first.scores))
    _same(first, again)
    assert not list(cache.rglob(".tmp-*")) and not list(cache.rglob(".trash-*"))


def test_full_fine_tuning_with_the_cache(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    config = _config(variant="B", learning_rate=3e-4, lora=LoraSettings(enabled=False))
    plain = _run(files, "val2", tiny_causal_lm_dir, config)
    _run(files, "val", tiny_causal_lm_dir, config, cache_dir=tmp_path / "c")
    cached = _run(files, "val2", tiny_causal_lm_dir, config, cache_dir=tmp_path / "c")
    assert cached.stats["base_rounds_reused"] == 1
    _same(plain, cached)


def test_other_settings_do_not_share_entries(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _run(files, "val", tiny_causal_lm_dir, _config(), cache_dir=cache)
    other_lr = _run(files, "val", tiny_causal_lm_dir, _config(learning_rate=2e-3), cache_dir=cache)
    assert other_lr.stats["base_rounds_reused"] == 0
    # The validation-side settings do not enter the key: the base half is reused.
    other_eps = _run(files, "val", tiny_causal_lm_dir, _config(val_lr_factor=0.5), cache_dir=cache)
    assert other_eps.stats["base_rounds_reused"] == 1
    assert len(list((cache / "bases").iterdir())) == 2
    assert len(list((cache / "pools").iterdir())) == 1  # one tokenised pool serves all three


def test_a_damaged_entry_is_detected_and_rebuilt(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    cache, config = tmp_path / "cache", _config()
    first = _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)
    (logprobs,) = cache.glob("bases/*/round_000/logprobs.npy")
    data = bytearray(logprobs.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last base log-prob becomes +inf: same size, other hash
    logprobs.write_bytes(bytes(data))
    (encoded,) = cache.glob("pools/*/labels.bin")
    encoded.write_bytes(encoded.read_bytes()[:-10])  # a truncated file
    again = _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)
    assert again.stats["base_rounds_reused"] == 0  # not used: recomputed and published again
    _same(first, again)
    third = _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)
    assert third.stats["base_rounds_reused"] == 1
    _same(first, third)


def test_the_tokenised_pool_is_reused(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    from tov_engine import job as runner

    cache, config = tmp_path / "cache", JobConfig(method="random")
    first = _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pool was tokenised again")

    monkeypatch.setattr(runner, "build_pool", refuse)
    monkeypatch.setattr(runner, "inspect_dataset", lambda path: None)  # not even re-validated
    again = _run(files, "val2", tiny_causal_lm_dir, config, cache_dir=cache)
    assert np.array_equal(first.lengths, again.lengths)
    assert first.stats["loss_tokens"] == again.stats["loss_tokens"]


def test_token_classification_labels_follow_the_validation_tags(
    write_jsonl: WriteRows, tiny_token_classifier_dir: Path, tmp_path: Path
) -> None:
    plain = {"tokens": ["The", "cat", "sat"], "tags": ["O", "O", "O"]}
    person = {"tokens": ["Alice", "sat"], "tags": ["B-PER", "O"]}
    place = {"tokens": ["Alice", "in", "London"], "tags": ["B-PER", "O", "B-LOC"]}
    pool = write_jsonl("p.jsonl", [person if i % 5 == 0 else plain for i in range(20)])
    val = write_jsonl("v.jsonl", [place] * 2)  # B-LOC is not in the pool: tag ids shift
    config = JobConfig(
        task="token_classification",
        selection=SelectionConfig(budget=8),
        tov=ToVConfig(rounds=1, base_size=4, learning_rate=1e-3, batch_size=4),
    )
    kw: dict[str, Any] = dict(
        pool_path=pool, validation_path=val, model=tiny_token_classifier_dir, config=config
    )
    plain_run = run_selection(**kw)
    run_selection(**kw, cache_dir=tmp_path / "c")
    cached = run_selection(**kw, cache_dir=tmp_path / "c")
    assert cached.stats["base_rounds_reused"] == 1
    _same(plain_run, cached)


def test_a_cancelled_run_leaves_no_partial_entry(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    cache, calls = tmp_path / "cache", {"n": 0}

    def cancel_while_scoring() -> bool:
        calls["n"] += 1
        return bool(list(cache.glob("bases/*/.tmp-*/logprobs.npy")))

    with pytest.raises(Cancelled):
        _run(
            files,
            "val",
            tiny_causal_lm_dir,
            _config(),
            cache_dir=cache,
            should_cancel=cancel_while_scoring,
        )
    assert not list(cache.rglob(".tmp-*")) and not list(cache.glob("bases/*/round_*"))


def test_an_unwritable_cache_only_costs_the_reuse(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    plain = _run(files, "val", tiny_causal_lm_dir, _config())
    cached = _run(files, "val", tiny_causal_lm_dir, _config(), cache_dir=blocked)
    _same(plain, cached)


def test_concurrent_publication_keeps_one_whole_entry(tmp_path: Path) -> None:
    store = EntryStore(tmp_path)
    for payload in (b"first", b"second"):  # two workers computed the same entry
        with store.writing("bases/k/round_000", "key/0") as tmp:
            (tmp / "data.bin").write_bytes(payload)
    folder = store.open("bases/k/round_000", "key/0")
    assert folder is not None and (folder / "data.bin").read_bytes() == b"first"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] == "key/0" and set(manifest["files"]) == {"data.bin"}
    assert store.open("bases/k/round_000", "another key") is None
    assert [p.name for p in (tmp_path / "bases" / "k").iterdir()] == ["round_000"]


def test_a_pool_on_disk_gives_the_same_result(
    files: dict[str, Path], tiny_causal_lm_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    from tov_engine.data import encoded as encoding
    from tov_engine.job import prepare_job

    config = _config()
    plain = _run(files, "val", tiny_causal_lm_dir, config)
    monkeypatch.setattr(encoding, "CHUNK_TOKENS", 64)  # the pool spills to a temporary folder
    kw: dict[str, Any] = dict(
        pool_path=files["pool"], validation_path=files["val"], model=tiny_causal_lm_dir
    )
    job = prepare_job(**kw, config=config)
    assert job.pool.on_disk and isinstance(job.pool.labels, np.memmap)
    _same(plain, _run(files, "val", tiny_causal_lm_dir, config))
    cache = tmp_path / "cache"
    _run(files, "val", tiny_causal_lm_dir, config, cache_dir=cache)
    cached = prepare_job(**kw, config=config, cache_dir=cache)
    assert cached.pool.on_disk and str(cache) in str(cached.pool.ids.filename)
    assert np.array_equal(cached.pool.ids, job.pool.ids)
    assert np.array_equal(cached.pool.loss_lengths, job.pool.loss_lengths)


def test_encode_into_cache_publishes_the_entry_it_wrote(
    tmp_path: Path, tiny_causal_lm_dir: Path
) -> None:
    from tov_engine.data.encoding import encode_rows
    from tov_engine.data.files import read_rows
    from tov_engine.model.loading import load_tokenizer
    from tov_engine.store.poolcache import encode_into_cache, load_pool

    tokenizer = load_tokenizer(tiny_causal_lm_dir)
    rows = [{"text": f"row {i} of the pool"} for i in range(12)]
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = EntryStore(tmp_path / "cache")

    def encode(folder: Path | None) -> Any:
        return encode_rows(tokenizer, read_rows(pool_file), max_length=16, folder=folder)

    made = encode_into_cache(store, "k" * 64, encode, "text", None)
    loaded = load_pool(store, "k" * 64)
    assert loaded is not None and loaded.format == "text" and loaded.encoded.on_disk
    for name in ("ids", "labels", "offsets", "truncated"):
        assert np.array_equal(getattr(made.encoded, name), getattr(loaded.encoded, name))
    assert not list((tmp_path / "cache").rglob(".tmp-*"))
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    uncached = encode_into_cache(EntryStore(blocked), "k" * 64, encode, "text", None)
    assert np.array_equal(uncached.encoded.ids, made.encoded.ids)
