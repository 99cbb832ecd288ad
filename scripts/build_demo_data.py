#!/usr/bin/env python
"""Build the committed demo data (demo/data/*.jsonl) from real offline text sources.

Needs (see demo/data/README.md):
    apt-get install fortunes fortunes-min bsdgames dict-foldoc dict-jargon dict-devil dict-gcide
    pip install --no-deps lm-eval      # its MMLU YAML files are read as data, never imported
Run from the repository root:
    python scripts/build_demo_data.py            # writes demo/data/{pool,validation,test}.jsonl
    python scripts/build_demo_data.py --check    # rebuild in memory, fail if the files differ

Deterministic: the same seed and the same installed source files give byte-identical files.
If the SmolLM2 folder made by scripts/prepare_model.py exists, token lengths are also checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tov_data_sources import available_sources, make_pool, make_splits, row_chars  # noqa: E402

SEED = 7
TARGET = "quiz:capitals"
N_VALIDATION = 16
N_TEST = 48
MAX_CHARS = 170  # prompt + completion
MAX_EST_TOKENS = 48  # tokenizer-free estimate (tov_data_sources.est_tokens)
MAX_TOKENS = 60  # real SmolLM2 tokens, checked when the tokenizer is present
# Rows per source in the pool: 240 rows, target 22 (9.2%).
POOL_COUNTS = {
    TARGET: 22,
    "quiz:elements": 30,
    "quiz:collectives": 25,
    "fortunes:computers": 38,
    "dict:foldoc": 42,
    "dict:devil": 32,
    "dict:gcide": 31,
    "mmlu": 20,  # rows are labelled mmlu:<subject>; bare answers "The answer is (X)."
}
OUT_DIR = ROOT / "demo" / "data"
TOKENIZER_DIR = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


def build() -> dict[str, list[dict]]:
    missing = [s for s in POOL_COUNTS if s not in available_sources()]
    if missing:
        raise SystemExit(f"sources not installed: {missing} (see the module docstring)")
    splits = make_splits(
        TARGET,
        n_validation=N_VALIDATION,
        n_test=N_TEST,
        seed=SEED,
        max_chars=MAX_CHARS,
        max_tokens=MAX_EST_TOKENS,
    )
    held_out = splits["validation"] + splits["test"]
    pool = make_pool(
        POOL_COUNTS,
        seed=SEED,
        max_chars=MAX_CHARS,
        max_tokens=MAX_EST_TOKENS,
        exclude=held_out,
        cot=False,
    )
    return {"pool": pool, "validation": splits["validation"], "test": splits["test"]}


def dumps(rows: list[dict]) -> str:
    return "".join(
        json.dumps(
            {"prompt": r["prompt"], "completion": r["completion"], "source": r["source"]},
            ensure_ascii=False,
        )
        + "\n"
        for r in rows
    )


def check_tokens(files: dict[str, list[dict]]) -> None:
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        print(f"token check skipped ({TOKENIZER_DIR} absent; scripts/prepare_model.py makes it)")
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    for name, rows in files.items():
        lens = [len(tok(r["prompt"] + "\n" + r["completion"])["input_ids"]) for r in rows]
        print(
            f"{name}: SmolLM2 tokens (prompt+completion) "
            f"mean {sum(lens) / len(lens):.1f}, max {max(lens)}"
        )
        if max(lens) > MAX_TOKENS:
            raise SystemExit(
                f"{name}: a row has {max(lens)} tokens > {MAX_TOKENS}; lower MAX_EST_TOKENS"
            )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--check", action="store_true", help="fail if the committed files differ from a rebuild"
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)

    files = build()
    val_keys = {(r["prompt"], r["completion"]) for r in files["validation"] + files["test"]}
    assert not val_keys & {(r["prompt"], r["completion"]) for r in files["pool"]}, (
        "pool overlaps held-out rows"
    )
    for name, rows in files.items():
        print(f"{name}: {len(rows)} rows, {sum(map(row_chars, rows)) / len(rows):.0f} chars/row")
    counts = Counter(
        r["source"].split(":")[0] if r["source"].startswith("mmlu:") else r["source"]
        for r in files["pool"]
    )
    for src, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  pool {src:22s} {n:4d}  ({100 * n / len(files['pool']):.1f}%)")
    check_tokens(files)

    stale = []
    for name, rows in files.items():
        path = args.out / f"{name}.jsonl"
        text = dumps(rows)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date: " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
