"""Template the offline sources into instruction rows `{"prompt", "completion", "source"}`, and
sample pools / target splits from them (deterministic for a given seed).

Source names (see `available_sources()`):
  quiz:capitals      "What is the capital of X?" -> "Y."  (bsdgames africa/america/asia/europe)
  quiz:state-capitals, quiz:province-capitals, quiz:elements, quiz:atomic-numbers,
  quiz:collectives, quiz:babies, quiz:sexes, quiz:latin, quiz:presidents
  fortunes:<category> "Tell me a joke about computers." -> a fortune (any Debian fortunes file)
  dict:foldoc | dict:jargon | dict:devil | dict:gcide  "Define ..." -> first sentence of the entry
  mmlu, mmlu:<subject>  MMLU question + choices -> Flan chain of thought (or "The answer is (X).")
  bbh, bbh:<task>       BBH exemplar input -> direct answer (or chain of thought)

Which template a row gets depends only on the row's key (a CRC32), not on sampling order, so a
row is the same in every pool that holds it.
"""

from __future__ import annotations

import random
import re
import zlib
from functools import lru_cache

from . import readers
from .clean import DEFINERS, clean_fortune, collapse

__all__ = [
    "FORTUNE_TOPICS",
    "available_sources",
    "est_tokens",
    "make_pool",
    "make_splits",
    "row_chars",
    "row_key",
    "sample_rows",
    "source_rows",
]


def _pick(key: str, options: list[str]) -> str:
    return options[zlib.crc32(key.encode("utf-8")) % len(options)]


def _row(prompt: str, completion: str, source: str) -> dict:
    return {"prompt": prompt, "completion": completion, "source": source}


def _period(text: str) -> str:
    text = text.strip()
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- quiz
_CAPITAL_FILES = ("africa", "america", "asia", "europe")


_THE = re.compile(
    r"^(United|Czech|Dominican|Central African|Democratic|Republic|Holy)\b|"
    r"(Islands|Isles|States|Emirates|Netherlands|Bahamas|Philippines|Maldives|Comoros|"
    r"Seychelles|Antilles)$"
)


def _country(name: str) -> str:
    """'United States Virgin Islands' -> 'the United States Virgin Islands'."""
    return f"the {name}" if _THE.search(name) and not name.startswith("The ") else name


def _quiz_capitals() -> list[dict]:
    seen, out = set(), []
    for cat in _CAPITAL_FILES:
        for r in readers.read_quiz(cat):
            country, capital = r["values"][:2]
            if country.lower() in seen:  # Georgia, Russia, Turkey are in two files
                continue
            seen.add(country.lower())
            out.append(
                _row(
                    f"What is the capital of {_country(country)}?",
                    _period(capital),
                    "quiz:capitals",
                )
            )
    return out


def _quiz_state_capitals() -> list[dict]:
    return [
        _row(
            f"What is the capital of the US state of {r['values'][0]}?",
            _period(r["values"][1]),
            "quiz:state-capitals",
        )
        for r in readers.read_quiz("state")
    ]


def _quiz_province_capitals() -> list[dict]:
    return [
        _row(
            f"What is the capital of the Canadian province or territory of {r['values'][0]}?",
            _period(r["values"][1]),
            "quiz:province-capitals",
        )
        for r in readers.read_quiz("province")
    ]


def _quiz_elements() -> list[dict]:
    return [
        _row(
            f"What is the chemical symbol for {r['values'][3]}?",
            _period(r["values"][0]),
            "quiz:elements",
        )
        for r in readers.read_quiz("elements")
    ]


def _quiz_atomic_numbers() -> list[dict]:
    return [
        _row(
            f"What is the atomic number of {r['values'][3]}?",
            _period(r["values"][1]),
            "quiz:atomic-numbers",
        )
        for r in readers.read_quiz("elements")
    ]


def _quiz_collectives() -> list[dict]:
    out = []
    for r in readers.read_quiz("collectives"):
        coll = r["values"][1]
        for ind in r["alternatives"][0]:
            out.append(
                _row(f"What is a group of {ind} called?", f"A {coll} of {ind}.", "quiz:collectives")
            )
    return out


def _quiz_babies() -> list[dict]:
    out = []
    for r in readers.read_quiz("babies"):
        baby = r["values"][0]
        for adult in r["alternatives"][1]:
            out.append(
                _row(
                    f"What is a young {adult} called?",
                    f"{_article(baby).capitalize()} {baby}.",
                    "quiz:babies",
                )
            )
    return out


def _quiz_sexes() -> list[dict]:
    return [
        _row(
            f"What is the female counterpart of '{r['values'][0]}'?",
            _period(r["values"][1]),
            "quiz:sexes",
        )
        for r in readers.read_quiz("sexes")
        if len(r["values"][0]) > 1
    ]


def _quiz_latin() -> list[dict]:
    return [
        _row(
            f"Translate the Latin word '{r['values'][0]}' into English.",
            _period(r["values"][1]),
            "quiz:latin",
        )
        for r in readers.read_quiz("latin")
    ]


def _quiz_presidents() -> list[dict]:
    out = []
    for r in readers.read_quiz("pres"):
        pres, _term, _vice, succ = r["values"][:4]
        out.append(
            _row(
                f"Who succeeded {pres} as President of the United States?",
                _period(succ),
                "quiz:presidents",
            )
        )
    return out


_QUIZ = {
    "quiz:capitals": _quiz_capitals,
    "quiz:state-capitals": _quiz_state_capitals,
    "quiz:province-capitals": _quiz_province_capitals,
    "quiz:elements": _quiz_elements,
    "quiz:atomic-numbers": _quiz_atomic_numbers,
    "quiz:collectives": _quiz_collectives,
    "quiz:babies": _quiz_babies,
    "quiz:sexes": _quiz_sexes,
    "quiz:latin": _quiz_latin,
    "quiz:presidents": _quiz_presidents,
}
_QUIZ_NEEDS = {
    "quiz:capitals": _CAPITAL_FILES,
    "quiz:state-capitals": ("state",),
    "quiz:province-capitals": ("province",),
    "quiz:elements": ("elements",),
    "quiz:atomic-numbers": ("elements",),
    "quiz:collectives": ("collectives",),
    "quiz:babies": ("babies",),
    "quiz:sexes": ("sexes",),
    "quiz:latin": ("latin",),
    "quiz:presidents": ("pres",),
}


# --------------------------------------------------------------------------- fortunes
FORTUNE_TOPICS = {
    "computers": "computers",
    "science": "science",
    "food": "food",
    "law": "the law",
    "medicine": "medicine",
    "politics": "politics",
    "sports": "sports",
    "startrek": "Star Trek",
    "work": "work",
    "love": "love",
    "pets": "pets",
    "education": "education",
    "linux": "Linux",
    "debian": "Debian",
    "perl": "Perl",
    "drugs": "drugs",
    "kids": "kids",
    "men-women": "men and women",
    "people": "people",
    "news": "the news",
    "art": "art",
    "magic": "magic",
    "literature": "literature",
    "humorists": "life",
    "wisdom": "life",
    "platitudes": "life",
    "miscellaneous": "life",
    "fortunes": "life",
    "cookie": "life",
    "pratchett": "life",
    "zippy": "life",
    "goedel": "logic",
    "paradoxum": "life",
    "tao": "the Tao",
    "songs-poems": "life",
    "riddles": "life",
    "definitions": "words",
    "linuxcookie": "Linux",
}
_FORTUNE_TEMPLATES = [
    "Tell me a joke about {t}.",
    "Share a witty quote about {t}.",
    "Give me a funny saying about {t}.",
]


def _fortunes(category: str) -> list[dict]:
    topic = FORTUNE_TOPICS.get(category, category.replace("-", " "))
    out = []
    for e in readers.read_fortunes(category):
        text = clean_fortune(e["text"])
        if not text:
            continue
        prompt = _pick(f"{category}:{e['index']}", _FORTUNE_TEMPLATES).format(t=topic)
        out.append(_row(prompt, text, f"fortunes:{category}"))
    return out


# --------------------------------------------------------------------------- dictionaries
_DICT_TEMPLATES = {
    "foldoc": ["Define the computing term '{w}'."],
    "jargon": ["What does the hacker slang term '{w}' mean?"],
    "devil": ["Give a cynical definition of '{w}'."],
    "gcide": ["Define the word '{w}'."],
}


def _dict(name: str) -> list[dict]:
    define = DEFINERS[name]
    out = []
    for e in readers.read_dict(name):
        got = define(e)
        if not got:
            continue
        term, defn = got
        if name == "gcide" and not re.fullmatch(r"[A-Za-z][a-z]+(?:[ -][a-z]+)*", term):
            continue  # numerals, abbreviations, proper names
        out.append(
            _row(
                _pick(f"{name}:{term}", _DICT_TEMPLATES[name]).format(w=term), defn, f"dict:{name}"
            )
        )
    return out


# --------------------------------------------------------------------------- lm-eval exemplars
def _mmlu(subject: str | None, cot: bool) -> list[dict]:
    out = []
    for r in readers.read_mmlu_cot():
        if subject and r["subject"] != subject:
            continue
        q = collapse(r["question"]).replace(" (A) ", "\n(A) ", 1)
        if cot:
            completion = collapse(r["target"])
        elif r["answer"]:
            completion = f"The answer is ({r['answer']})."
        else:
            continue
        out.append(_row(q, completion, f"mmlu:{r['subject']}"))
    return out


def _bbh(task: str | None, cot: bool) -> list[dict]:
    out = []
    for r in readers.read_bbh(variant="cot_fewshot" if cot else "fewshot"):
        if task and r["task"] != task:
            continue
        out.append(_row(r["input"].strip(), r["target"].strip(), f"bbh:{r['task']}"))
    return out


# --------------------------------------------------------------------------- registry
def available_sources() -> list[str]:
    """Source names whose files are installed here (quiz, fortunes and dict per Debian file)."""
    names = []
    quiz = set(readers.quiz_categories())
    names += [n for n, need in _QUIZ_NEEDS.items() if set(need) <= quiz]
    names += [f"fortunes:{c}" for c in readers.fortune_categories()]
    dicts = set(readers.dict_names())
    names += [f"dict:{d}" for d in DEFINERS if d in dicts]
    if readers.lm_eval_tasks_dir() is not None:
        names += ["mmlu", "bbh"]
    return names


@lru_cache(maxsize=64)
def _source_rows(source: str, cot: bool) -> tuple:
    kind, _, arg = source.partition(":")
    if source in _QUIZ:
        rows = _QUIZ[source]()
    elif kind == "fortunes" and arg:
        rows = _fortunes(arg)
    elif kind == "dict" and arg in DEFINERS:
        rows = _dict(arg)
    elif kind == "mmlu":
        rows = _mmlu(arg or None, cot)
    elif kind == "bbh":
        rows = _bbh(arg or None, cot)
    else:
        raise KeyError(f"unknown source {source!r}")
    seen, out = set(), []
    for r in rows:  # drop exact duplicates (first wins)
        if row_key(r) not in seen and r["completion"]:
            seen.add(row_key(r))
            out.append(r)
    return tuple(out)


def source_rows(source: str, *, cot: bool = True) -> list[dict]:
    """Every row of a source, in file order, without exact duplicates. `cot` only matters for
    mmlu/bbh (False: the completion is the bare answer)."""
    return [dict(r) for r in _source_rows(source, cot)]


def row_chars(row: dict) -> int:
    return len(row["prompt"]) + len(row["completion"])


_EST = re.compile(r"[A-Za-z]{1,7}|\d|[^\sA-Za-z\d]")


def est_tokens(row: dict) -> int:
    """Tokenizer-free length estimate of prompt + completion: each run of up to 7 letters, each
    digit and each other symbol counts one. Tracks byte-level BPE tokenizers (SmolLM2: ratio ~1.0)
    without needing the model, so pools stay deterministic where no tokenizer is installed."""
    return len(_EST.findall(row["prompt"] + "\n" + row["completion"]))


def row_key(row: dict) -> tuple[str, str]:
    """What makes two rows the same row: (prompt, completion)."""
    return row["prompt"], row["completion"]


def _eligible(source, *, max_chars, max_tokens, exclude, cot):
    ex = {row_key(r) if isinstance(r, dict) else tuple(r) for r in (exclude or ())}
    return [
        r
        for r in source_rows(source, cot=cot)
        if row_key(r) not in ex
        and (max_chars is None or row_chars(r) <= max_chars)
        and (max_tokens is None or est_tokens(r) <= max_tokens)
    ]


def sample_rows(
    source: str,
    n: int,
    *,
    seed: int = 0,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    exclude=(),
    cot: bool = True,
    strict: bool = True,
) -> list[dict]:
    """n rows of one source drawn without replacement (seeded), none equal to a row in `exclude`
    (rows or (prompt, completion) pairs), within max_chars / max_tokens (est_tokens).
    strict: fail when fewer rows are eligible."""
    rows = _eligible(source, max_chars=max_chars, max_tokens=max_tokens, exclude=exclude, cot=cot)
    if len(rows) < n:
        if strict:
            raise ValueError(f"{source}: only {len(rows)} eligible rows, {n} asked")
        n = len(rows)
    rng = random.Random(f"{seed}:{source}")
    return rng.sample(rows, n)


def make_splits(
    target: str,
    *,
    n_validation: int,
    n_test: int,
    seed: int = 0,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    cot: bool = True,
) -> dict[str, list[dict]]:
    """Split one target source into disjoint validation / test / rest (rest may go into a pool)."""
    rows = _eligible(target, max_chars=max_chars, max_tokens=max_tokens, exclude=(), cot=cot)
    if n_validation + n_test > len(rows):
        raise ValueError(f"{target}: {len(rows)} rows, {n_validation}+{n_test} asked")
    rng = random.Random(f"{seed}:split:{target}")
    rng.shuffle(rows)
    return {
        "validation": rows[:n_validation],
        "test": rows[n_validation : n_validation + n_test],
        "rest": rows[n_validation + n_test :],
    }


def make_pool(
    counts: dict[str, int],
    *,
    seed: int = 0,
    max_chars: int | None = None,
    max_tokens: int | None = None,
    exclude=(),
    cot: bool = True,
    strict: bool = True,
) -> list[dict]:
    """A shuffled pool with counts[source] rows of each source, none of them in `exclude`
    (pass the target's validation + test rows so the pool stays disjoint from them)."""
    pool = []
    for source in sorted(counts):
        pool += sample_rows(
            source,
            counts[source],
            seed=seed,
            max_chars=max_chars,
            max_tokens=max_tokens,
            exclude=exclude,
            cot=cot,
            strict=strict,
        )
    random.Random(f"{seed}:pool").shuffle(pool)
    return pool
