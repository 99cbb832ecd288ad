"""tov_data_sources: parsers on small inline samples (always run), real sources (skipped where the
Debian packages / lm-eval are not installed), and the committed demo data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tov_data_sources import readers
from tov_data_sources.clean import (
    clean_fortune,
    devil_definition,
    first_sentence,
    foldoc_definition,
    gcide_definition,
    strip_xrefs,
)
from tov_data_sources.instructions import est_tokens, row_key

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "data"

# --------------------------------------------------------------------------- inline samples
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _enc(n: int) -> str:
    s = ""
    while True:
        s = _B64[n % 64] + s
        n //= 64
        if not n:
            return s


def _write_dictd(tmp_path: Path, name: str, entries: list[tuple[list[str], str]]) -> Path:
    data, index = b"", []
    for keys, text in entries:
        raw = text.encode("utf-8")
        for k in keys:
            index.append((k, len(data), len(raw)))
        data += raw
    index.sort(key=lambda t: t[0].lower())
    (tmp_path / f"{name}.index").write_text(
        "".join(f"{k}\t{_enc(o)}\t{_enc(n)}\n" for k, o, n in index), encoding="utf-8"
    )
    with gzip.open(tmp_path / f"{name}.dict.dz", "wb") as fh:
        fh.write(data)
    return tmp_path


def test_dictd_b64():
    assert readers.dictd_b64("A") == 0
    assert readers.dictd_b64("b") == 27
    assert readers.dictd_b64("BA") == 64
    assert readers.dictd_b64(_enc(1_728_331)) == 1_728_331


FOLDOC_CACHE = (
    "cache\ncache memory\n\n   <memory management> /kash/ A small fast memory holding\n"
    "   recently accessed data, designed to speed up subsequent {access}.  Most\n"
    "   often applied to processor-memory access.\n\n"
)
FOLDOC_ASCII = (
    "American Standard Code for Information Interchange\nASCII\n\n   <character, standard> "
    "The basis of {character sets} used in almost\n"
    "   all present-day computers (e.g. {Unix}).  More.\n\n"
)


def test_read_dict_inline(tmp_path):
    _write_dictd(
        tmp_path,
        "mini",
        [
            (["00databaseshort"], "mini test dictionary\n"),
            (["cache", "cache memory"], FOLDOC_CACHE),
            (["american standard code for information interchange", "ascii"], FOLDOC_ASCII),
            (["see-only"], "see-only\n\n   See {cache}.\n\n"),
        ],
    )
    assert readers.dict_names(tmp_path) == ["mini"]
    entries = readers.read_dict("mini", root=tmp_path)
    assert len(entries) == 3  # metadata dropped, shared entries merged
    by_word = {e["headword"]: e for e in entries}
    assert by_word["cache"]["headwords"] == ["cache", "cache memory"]
    assert by_word["cache"]["text"] == FOLDOC_CACHE
    assert len(readers.read_dict("mini", root=tmp_path, include_meta=True)) == 4

    defs = {e["headword"]: foldoc_definition(e) for e in entries}
    assert defs["cache"] == (
        "cache",
        "A small fast memory holding recently accessed data, "
        "designed to speed up subsequent access.",
    )
    assert defs["American Standard Code for Information Interchange"] == (
        "ASCII",
        "The basis of character sets used in almost all present-day computers (e.g. Unix).",
    )
    assert defs["see-only"] is None  # a bare cross-reference is no definition


def test_devil_and_gcide_definitions():
    devil = {
        "headword": "lawyer",
        "text": "LAWYER, n.  One skilled in circumvention of the law.\n\n",
    }
    assert devil_definition(devil) == ("lawyer", "One skilled in circumvention of the law.")
    gcide = {
        "headword": "Apple",
        "text": (
            'Apple \\Ap"ple\\ ([a^]p"p\'l), n. [OE. appel, AS. [ae]ppel; of\n   unknown origin.]\n'
            "   1. The fleshy pome or fruit of a rosaceous tree ({Pyrus\n"
            "      malus}) cultivated in "
            "numberless varieties.\n      [1913 Webster]\n"
        ),
    }
    assert gcide_definition(gcide) == (
        "apple",
        "The fleshy pome or fruit of a rosaceous tree (Pyrus malus) cultivated in "
        "numberless varieties.",
    )


def test_text_helpers():
    assert strip_xrefs("a {b {c}} d") == "a b c d"
    assert first_sentence("Uses e.g. Perl. Then more.") == "Uses e.g. Perl."
    assert first_sentence("By Alfred V. Aho and others. Next.") == "By Alfred V. Aho and others."
    assert first_sentence("The U.S. one (see x. y). Next.") == "The U.S. one (see x. y)."
    assert clean_fortune("Line one\nline two.\n\t\t-- Some One") == "Line one line two. -- Some One"
    assert clean_fortune("  ____\n |____|\n |____|\n") is None


QUIZ_INDEX = (
    "/usr/share/games/bsdgames/quiz/europe:Europe{an}:cap{ital}\n"
    "/usr/share/games/bsdgames/quiz/pres:pres{ident}:term:vice:succ{essor}\n"
)
QUIZ_EUROPE = (
    "Austria:Vienna|Wien\nAndorra:Andorra la V[ell|iej]a\n"
    "Iceland:Reykjav['\bi|i'\b|i]k\n[\u00b0\bA|A\u00b0\b|A]land Islands:Mariehamn\n"
)
QUIZ_PRES = (
    "{G{eorge} }Washington:1789-{17}97:{J{ohn} }Adams:{J{ohn} }Adams\n"
    "{T{homas} }Jefferson:1801-{{18}0}9:{A{aron} }Burr|{G{eorge} }Clinton:\\\n"
    "{J{ames} }Madison\n"
)


def test_read_quiz_inline(tmp_path):
    (tmp_path / "index").write_text(QUIZ_INDEX, encoding="utf-8")
    (tmp_path / "europe").write_text(QUIZ_EUROPE, encoding="utf-8")
    (tmp_path / "pres").write_text(QUIZ_PRES, encoding="utf-8")
    assert readers.read_quiz_index(tmp_path) == {
        "europe": ["european", "capital"],
        "pres": ["president", "term", "vice", "successor"],
    }
    assert readers.quiz_categories(tmp_path) == ["europe", "pres"]
    eu = readers.read_quiz("europe", root=tmp_path)
    assert [r["values"] for r in eu] == [
        ["Austria", "Vienna"],
        ["Andorra", "Andorra la Vella"],
        ["Iceland", "Reykjavík"],
        ["Åland Islands", "Mariehamn"],
    ]
    assert eu[0]["alternatives"][1] == ["Vienna", "Wien"]
    pres = readers.read_quiz("pres", root=tmp_path)
    assert len(pres) == 2  # the backslash continues a record
    assert pres[0]["values"] == ["George Washington", "1789-1797", "John Adams", "John Adams"]
    assert pres[1]["alternatives"][2] == ["Aaron Burr", "George Clinton"]
    assert pres[1]["values"][3] == "James Madison"
    assert readers.expand_quiz("{G{eorge} }Washington", full=False) == ["Washington"]


def test_read_fortunes_inline(tmp_path):
    (tmp_path / "tiny").write_text(
        "First one.\n%\nSecond\n  two lines.\n%\n%\nThird.\n", encoding="utf-8"
    )
    (tmp_path / "tiny.dat").write_bytes(b"\0")
    assert readers.fortune_categories(tmp_path) == ["tiny"]
    rows = readers.read_fortunes("tiny", root=tmp_path)
    assert [r["text"] for r in rows] == ["First one.", "Second\n  two lines.", "Third."]


def test_read_mmlu_yaml_inline(tmp_path):
    pytest.importorskip("yaml")
    d = tmp_path / "mmlu" / "flan_cot_fewshot"
    d.mkdir(parents=True)
    (d / "mmlu_astronomy.yaml").write_text(
        "dataset_name: astronomy\nprocess: !function utils.process\nfewshot_config:\n  samples:\n"
        "  - question: 'Why is Mars red?\n\n      (A) Rust (B) Light (C) Lava (D) Water'\n"
        "    target: Let's think step by step. Oxidised minerals. The answer is (A).\n",
        encoding="utf-8",
    )
    rows = readers.read_mmlu_cot(tmp_path)
    assert rows == [
        {
            "subject": "astronomy",
            "question": "Why is Mars red?\n(A) Rust (B) Light (C) Lava (D) Water",
            "target": "Let's think step by step. Oxidised minerals. The answer is (A).",
            "answer": "A",
        }
    ]


def test_est_tokens_counts_digits_and_symbols():
    assert est_tokens({"prompt": "What is 12?", "completion": "Twelve."}) == 7


# --------------------------------------------------------------------------- real sources
needs_quiz = pytest.mark.skipif(
    not (readers.QUIZ_DIR / "index").exists(), reason="apt-get install bsdgames"
)
needs_fortunes = pytest.mark.skipif(
    not (readers.FORTUNES_DIR / "computers").exists(), reason="apt-get install fortunes"
)
needs_foldoc = pytest.mark.skipif(
    not (readers.DICTD_DIR / "foldoc.index").exists(), reason="apt-get install dict-foldoc"
)


@needs_quiz
def test_real_quiz_capitals():
    from tov_data_sources import make_splits, source_rows

    rows = source_rows("quiz:capitals")
    assert len(rows) > 200
    assert {
        "prompt": "What is the capital of France?",
        "completion": "Paris.",
        "source": "quiz:capitals",
    } in rows
    s = make_splits("quiz:capitals", n_validation=16, n_test=48, seed=3)
    keys = [{row_key(r) for r in s[k]} for k in ("validation", "test", "rest")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert len(keys[0]) == 16 and sum(map(len, keys)) == len(rows)
    again = make_splits("quiz:capitals", n_validation=16, n_test=48, seed=3)
    assert again == s


@needs_fortunes
def test_real_fortunes():
    rows = readers.read_fortunes("computers")
    assert len(rows) > 500 and all(r["text"] for r in rows)


@needs_foldoc
def test_real_foldoc_and_pool():
    from tov_data_sources import make_pool

    entries = readers.read_dict("foldoc")
    assert len(entries) > 10_000
    pool = make_pool(
        {"dict:foldoc": 300, "quiz:capitals": 30}
        if (readers.QUIZ_DIR / "index").exists()
        else {"dict:foldoc": 300},
        seed=1,
        max_tokens=48,
    )
    assert len(pool) in (300, 330) and len({row_key(r) for r in pool}) == len(pool)
    assert all(est_tokens(r) <= 48 and r["completion"].endswith((".", "!", "?")) for r in pool)


def test_real_mmlu():
    if readers.lm_eval_tasks_dir() is None:
        pytest.skip("pip install --no-deps lm-eval")
    pytest.importorskip("yaml")
    rows = readers.read_mmlu_cot()
    assert len(rows) >= 250 and len({r["subject"] for r in rows}) >= 50
    assert sum(r["answer"] is not None for r in rows) >= len(rows) - 3


# --------------------------------------------------------------------------- committed demo data
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_demo_data_shape():
    pool, val, test = (_jsonl(DEMO / f"{n}.jsonl") for n in ("pool", "validation", "test"))
    for rows in (pool, val, test):
        for r in rows:
            assert set(r) == {"prompt", "completion", "source"}
            assert r["prompt"].strip() and r["completion"].strip() and ":" in r["source"]
    assert 200 <= len(pool) <= 300 and len(val) == 16
    assert {r["source"] for r in val} == {"quiz:capitals"} == {r["source"] for r in test}
    held = {row_key(r) for r in val + test}
    assert not held & {row_key(r) for r in pool}
    share = sum(r["source"] == "quiz:capitals" for r in pool) / len(pool)
    assert 0.07 <= share <= 0.11
    assert max(est_tokens(r) for r in pool) <= 48


def test_demo_data_is_rebuilt_identically():
    """Only where every source is installed: the committed files match a fresh build."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_demo_data", ROOT / "scripts" / "build_demo_data.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from tov_data_sources import available_sources

    have = set(available_sources())
    if readers.lm_eval_tasks_dir() is None or not set(mod.POOL_COUNTS) <= have:
        pytest.skip("demo sources not all installed (see demo/data/README.md)")
    files = mod.build()
    for name, rows in files.items():
        assert (DEMO / f"{name}.jsonl").read_text(encoding="utf-8") == mod.dumps(rows), name
