"""Readers for the offline text sources: Debian fortunes, bsdgames quiz, dictd databases, and the
MMLU / BBH few-shot exemplars shipped (as YAML) inside the PyPI package `lm-eval`.

Each reader returns a list of plain dicts, in file order (deterministic). Every reader takes an
optional `root`/path argument so tests can point it at small files; the defaults are where the
Debian packages put their files. Nothing here imports `lm_eval` (its YAML files are read as data).
"""

from __future__ import annotations

import gzip
import importlib.metadata as md
import importlib.util
import os
import re
import unicodedata
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
QUIZ_DIR = Path("/usr/share/games/bsdgames/quiz")
DICTD_DIR = Path("/usr/share/dictd")

__all__ = [
    "DICTD_DIR",
    "FORTUNES_DIR",
    "QUIZ_DIR",
    "dict_names",
    "dictd_b64",
    "expand_quiz",
    "fortune_categories",
    "lm_eval_tasks_dir",
    "parse_quiz_field",
    "quiz_categories",
    "read_bbh",
    "read_bbh_cot",
    "read_dict",
    "read_fortunes",
    "read_mmlu_cot",
    "read_quiz",
    "read_quiz_index",
]


# --------------------------------------------------------------------------- fortunes
def fortune_categories(root: Path | str = FORTUNES_DIR) -> list[str]:
    """Category files in a fortunes folder (those with a strfile `.dat` beside them)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.stem for p in root.glob("*.dat") if (root / p.stem).is_file())


def read_fortunes(category: str, root: Path | str = FORTUNES_DIR) -> list[dict]:
    """Entries of one fortune file: text blocks separated by a line holding only `%`.

    Returns [{"category", "index", "text"}]; text keeps its line breaks, trailing blanks removed.
    """
    path = Path(root) / category
    raw = path.read_bytes().decode("utf-8", errors="replace")
    out: list[dict] = []
    block: list[str] = []

    def flush():
        text = "\n".join(block).strip("\n").rstrip()
        if text.strip():
            out.append({"category": category, "index": len(out), "text": text})
        block.clear()

    for line in raw.splitlines():
        if line.rstrip() == "%":
            flush()
        else:
            block.append(line.rstrip())
    flush()
    return out


# --------------------------------------------------------------------------- bsdgames quiz
# Quiz files: one record a line (a trailing backslash continues it), fields separated by `:`.
# In a field, `|` separates alternatives, `{x}` is optional text, `[a|b]` a choice inside a word
# and `\c` a literal character. Accented letters are spelt as a choice such as `Bogot['a|a'|a]`.
_ACCENTS = {
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    "~": "\u0303",
    ",": "\u0327",
    "\u00b0": "\u030a",
    '"': "\u0308",
}
_STROKE = {"o": "\u00f8", "O": "\u00d8", "l": "\u0142", "L": "\u0141"}


def _accent(alt: str) -> str | None:
    """'e or e' -> é, ^o -> ô, /o -> ø ... or None when `alt` is not an accent spelling.
    The files spell accents as overstrikes (`'<BS>e`); the backspace is optional here."""
    alt = alt.replace("\b", "")
    if len(alt) != 2:
        return None
    for mark, letter in ((alt[0], alt[1]), (alt[1], alt[0])):
        if letter.isalpha() and mark in _ACCENTS:
            return unicodedata.normalize("NFC", letter + _ACCENTS[mark])
        if letter.isalpha() and mark == "/" and letter in _STROKE:
            return _STROKE[letter]
    return None


class _QuizParser:
    """Tiny recursive-descent parser for one quiz field; builds nested lists.

    node := str | ("opt", alts) | ("alt", alts);  alts := [seq, ...];  seq := [node, ...]
    """

    def __init__(self, text: str):
        self.s, self.i = text, 0

    def alts(self, closer: str | None) -> list[list]:
        out = [self.seq(closer)]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            out.append(self.seq(closer))
        return out

    def seq(self, closer: str | None) -> list:
        items: list = []
        buf = ""
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "|" or (closer is not None and c == closer):
                break
            if c in "]}" and closer is None:  # stray closer: keep it literally
                buf += c
                self.i += 1
                continue
            if c == "\\" and self.i + 1 < len(self.s):
                buf += self.s[self.i + 1]
                self.i += 2
                continue
            if c in "{[":
                if buf:
                    items.append(buf)
                    buf = ""
                self.i += 1
                close = "}" if c == "{" else "]"
                sub = self.alts(close)
                if self.i < len(self.s) and self.s[self.i] == close:
                    self.i += 1
                items.append(("opt" if c == "{" else "alt", sub))
                continue
            buf += c
            self.i += 1
        if buf:
            items.append(buf)
        return items


def _render(seq: list, full: bool) -> str:
    out = []
    for node in seq:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "opt":
            if full:
                out.append(_render(node[1][0], full))
        else:  # a choice: the first alternative (an accent spelling such as `'e` becomes é)
            first = _render(node[1][0], full)
            out.append(_accent(first) or first)
    return "".join(out)


_OVERSTRIKE = re.compile(r"(.)\x08(.)")


def _fix_overstrikes(text: str) -> str:
    """An overstrike outside a choice (`'<BS>e`): make the accented letter, or drop the mark."""

    def sub(m):
        return _accent(m.group(1) + m.group(2)) or (
            m.group(2) if m.group(2).isalnum() else m.group(1)
        )

    return _OVERSTRIKE.sub(sub, text).replace("\b", "")


def parse_quiz_field(field: str) -> list[list]:
    """Parse one quiz field into its top-level alternatives (each a node sequence)."""
    return _QuizParser(field).alts(None)


def expand_quiz(field: str, full: bool = True) -> list[str]:
    """Every top-level alternative of a quiz field, rendered with optional parts included
    (`full=True`, e.g. `{G{eorge} }Washington` -> `George Washington`) or dropped (`full=False`
    -> `Washington`). Choices take their first alternative; accent spellings become Unicode."""
    out = []
    for alt in parse_quiz_field(field):
        text = " ".join(_fix_overstrikes(_render(alt, full)).split())
        if text and text not in out:
            out.append(text)
    return out


def _split_fields(line: str) -> list[str]:
    """Split a record on `:` outside braces/brackets and not escaped."""
    fields, buf, depth, i = [], "", 0, 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            buf += line[i : i + 2]
            i += 2
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth = max(0, depth - 1)
        if c == ":" and depth == 0:
            fields.append(buf)
            buf = ""
        else:
            buf += c
        i += 1
    fields.append(buf)
    return fields


def _logical_lines(text: str) -> list[str]:
    lines, cur = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            cur += raw[:-1]
            continue
        cur += raw
        if cur.strip():
            lines.append(cur)
        cur = ""
    if cur.strip():
        lines.append(cur)
    return lines


def read_quiz_index(root: Path | str = QUIZ_DIR) -> dict[str, list[str]]:
    """The quiz `index` file: category (file basename) -> field names (full form, lower case),
    e.g. {"europe": ["european", "capital"],
          "elements": ["symbol", "number", "weight", "element"]}."""
    root = Path(root)
    out: dict[str, list[str]] = {}
    for line in _logical_lines((root / "index").read_text(encoding="utf-8", errors="replace")):
        parts = _split_fields(line)
        if len(parts) < 3:
            continue
        out[os.path.basename(parts[0])] = [(expand_quiz(p) or [p])[0].lower() for p in parts[1:]]
    return out


def quiz_categories(root: Path | str = QUIZ_DIR) -> list[str]:
    root = Path(root)
    if not (root / "index").is_file():
        return []
    return sorted(c for c in read_quiz_index(root) if (root / c).is_file())


def read_quiz(category: str, root: Path | str = QUIZ_DIR) -> list[dict]:
    """Records of one quiz category.

    Returns [{"category", "fields": [names], "values": [canonical text per field],
    "alternatives": [[every accepted answer per field]], "raw": line}]; records with fewer fields
    than the index names are skipped.
    """
    root = Path(root)
    names = read_quiz_index(root).get(category)
    text = (root / category).read_text(encoding="utf-8", errors="replace")
    out = []
    for line in _logical_lines(text):
        parts = _split_fields(line)
        if names is None:
            names = [f"field{i}" for i in range(len(parts))]
        if len(parts) < len(names):
            continue
        alts = [expand_quiz(p) for p in parts[: len(names)]]
        if not all(alts):
            continue
        out.append(
            {
                "category": category,
                "fields": list(names),
                "values": [a[0] for a in alts],
                "alternatives": alts,
                "raw": line,
            }
        )
    return out


# --------------------------------------------------------------------------- dictd
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VAL = {c: i for i, c in enumerate(_B64)}


def dictd_b64(s: str) -> int:
    """dictd's index numbers: big-endian base-64 digits (`A`=0 ... `/`=63): 'Gb9L' -> 1728331."""
    n = 0
    for c in s:
        n = n * 64 + _B64_VAL[c]
    return n


def dict_names(root: Path | str = DICTD_DIR) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name[: -len(".index")]
        for p in root.glob("*.index")
        if (root / (p.name[: -len(".index")] + ".dict.dz")).exists()
        or (root / (p.name[: -len(".index")] + ".dict")).exists()
    )


def read_dict(name: str, root: Path | str = DICTD_DIR, include_meta: bool = False) -> list[dict]:
    """Entries of a dictd database `NAME.index` + `NAME.dict.dz` (gzip; dictzip is gzip-compatible).

    Index lines are `headword<TAB>offset<TAB>length` with offset/length in dictd base-64, pointing
    into the uncompressed data (bytes). Several headwords can share one entry: one dict is returned
    per distinct entry, in order of first appearance in the index:
    [{"dict", "headword", "headwords": [...], "text"}]; headword is the key that the entry's
    first line spells (case-insensitively, in the entry's own case), else the first key.
    `00database*` / `00-database-*` metadata entries are dropped unless include_meta.
    """
    root = Path(root)
    dz, plain = root / f"{name}.dict.dz", root / f"{name}.dict"
    if dz.exists():
        with gzip.open(dz) as fh:
            data = fh.read()
    else:
        data = plain.read_bytes()
    entries: dict[tuple[int, int], dict] = {}
    with open(root / f"{name}.index", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            key = parts[0]
            if not include_meta and (key.startswith("00database") or key.startswith("00-database")):
                continue
            try:
                span = (dictd_b64(parts[1]), dictd_b64(parts[2]))
            except KeyError:
                continue
            e = entries.get(span)
            if e is None:
                off, length = span
                text = data[off : off + length].decode("utf-8", errors="replace")
                entries[span] = {"dict": name, "headword": key, "headwords": [key], "text": text}
            elif key not in e["headwords"]:
                e["headwords"].append(key)
    out = list(entries.values())
    for e in out:
        first = e["text"].lstrip().split("\n", 1)[0].strip()
        # "WORD, n." (devil) / "Word \\Word\\" (gcide) -> WORD / Word
        first = first.split(",", 1)[0].split(" \\", 1)[0].strip()
        for k in e["headwords"]:
            if first.lower() == k.lower():
                # keep the entry's own spelling ("Perl"), but not SHOUTED headwords (devil)
                e["headword"] = first if not (first.isupper() and len(first) > 1) else k
                break
    return out


# --------------------------------------------------------------------------- lm-eval YAML files
def lm_eval_tasks_dir() -> Path | None:
    """`lm_eval/tasks` of the installed PyPI package `lm-eval`, found without importing it."""
    try:
        p = Path(str(md.distribution("lm-eval").locate_file("lm_eval/tasks")))
        if p.is_dir():
            return p
    except md.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("lm_eval")  # top-level find_spec does not execute the package
    if spec and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))) / "tasks"
        if p.is_dir():
            return p
    return None


def _yaml_load(path: Path):
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    # lm-eval configs use tags such as `!function utils.x`: read them as None.
    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)


def _tasks_dir(tasks_dir):
    d = Path(tasks_dir) if tasks_dir else lm_eval_tasks_dir()
    if d is None or not d.is_dir():
        raise FileNotFoundError("lm-eval task files not found: pip install --no-deps lm-eval")
    return d


def read_mmlu_cot(tasks_dir: Path | str | None = None) -> list[dict]:
    """MMLU dev questions with Flan chain-of-thought answers (`mmlu/flan_cot_fewshot/*.yaml`).

    Returns [{"subject", "question", "target", "answer"}]; question holds the stem and the
    `(A) ... (D) ...` choices; answer is the letter parsed from "The answer is (X)." (or None).
    """
    d = _tasks_dir(tasks_dir) / "mmlu" / "flan_cot_fewshot"
    out = []
    for path in sorted(d.glob("mmlu_*.yaml")):
        cfg = _yaml_load(path) or {}
        subject = cfg.get("dataset_name") or path.stem[len("mmlu_") :]
        for s in (cfg.get("fewshot_config") or {}).get("samples") or []:
            target = str(s.get("target", "")).strip()
            m = re.search(r"answer is \(?([A-D])\)?", target)
            out.append(
                {
                    "subject": subject,
                    "question": str(s.get("question", "")).strip(),
                    "target": target,
                    "answer": m.group(1) if m else None,
                }
            )
    return out


def read_bbh(tasks_dir: Path | str | None = None, variant: str = "fewshot") -> list[dict]:
    """BBH few-shot exemplars, `bbh/<variant>/*.yaml` (variant "fewshot": direct answers,
    "cot_fewshot": chain of thought). Returns [{"task", "input", "target"}]."""
    d = _tasks_dir(tasks_dir) / "bbh" / variant
    out = []
    for path in sorted(d.glob("*.yaml")):
        cfg = _yaml_load(path) or {}
        task = cfg.get("dataset_name") or path.stem
        for s in (cfg.get("fewshot_config") or {}).get("samples") or []:
            out.append(
                {
                    "task": task,
                    "input": str(s.get("input", "")).strip(),
                    "target": str(s.get("target", "")).strip(),
                }
            )
    return out


def read_bbh_cot(tasks_dir: Path | str | None = None) -> list[dict]:
    return read_bbh(tasks_dir, "cot_fewshot")
