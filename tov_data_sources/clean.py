"""Text cleaning and definition extraction for the dictd / fortunes sources.

Each `*_definition(entry)` takes an entry dict from `readers.read_dict` and returns
`(term, definition)` with the definition cut to its first sentence, or None when the entry is not
usable as a one-sentence definition (a bare cross-reference, empty, markup left over ...).
"""

from __future__ import annotations

import re

__all__ = [
    "DEFINERS",
    "clean_fortune",
    "collapse",
    "devil_definition",
    "first_sentence",
    "foldoc_definition",
    "gcide_definition",
    "jargon_definition",
    "strip_xrefs",
]

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_XREF = re.compile(r"\{([^{}]*)\}")
# Words after which a full stop does not end a sentence.
_ABBREV = {
    "e.g",
    "i.e",
    "etc",
    "vs",
    "cf",
    "viz",
    "mr",
    "mrs",
    "dr",
    "st",
    "no",
    "ca",
    "approx",
    "esp",
    "fig",
    "inc",
    "ltd",
    "co",
    "jr",
    "sr",
    "prof",
    "mt",
    "u.s",
    "u.k",
    "a.k.a",
    "aka",
    "al",
    "c",
}


def collapse(text: str) -> str:
    """Drop control characters and collapse all whitespace runs to one space."""
    return " ".join(_CTRL.sub("", text).split())


def strip_xrefs(text: str) -> str:
    """`{cross reference}` -> `cross reference` (dictd markup, also nested)."""
    prev = None
    while prev != text:
        prev, text = text, _XREF.sub(r"\1", text)
    return text.replace("{", "").replace("}", "")


def first_sentence(text: str) -> str:
    """The text up to and including the first sentence-ending `.`, `!` or `?` (not after a common
    abbreviation, a single letter or inside parentheses); the whole text if none."""
    depth = 0
    for i, c in enumerate(text):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth = max(0, depth - 1)
        elif c in ".!?" and depth == 0:
            nxt = text[i + 1 : i + 2]
            if nxt and not nxt.isspace():
                continue
            if c == ".":
                word = re.search(r"([\w.]+)$", text[:i])
                w = word.group(1).lower() if word else ""
                if w in _ABBREV or (len(w) == 1 and w.isalpha()) or re.fullmatch(r"(\w\.)+\w", w):
                    continue
                after = text[i + 1 :].lstrip()
                if after and after[0].islower():
                    continue
            return text[: i + 1].strip()
    return text.strip()


def _ok(defn: str, min_chars: int = 12) -> bool:
    if len(defn) < min_chars or not re.search(r"[a-zA-Z]{3}", defn):
        return False
    if re.match(
        r"(?i)(see|same as|compare|obsolete|abbreviation for|alternative spelling)\b", defn
    ):
        return False
    return not any(ch in defn for ch in "{}\\|<>")


def _finish(defn: str) -> str:
    defn = collapse(defn).strip(" ;:,-")
    if defn and defn[0].islower():
        defn = defn[0].upper() + defn[1:]
    if defn and defn[-1] not in ".!?":
        defn += "."
    return defn


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def foldoc_definition(entry: dict):
    """FOLDOC: name lines, a blank line, then `<topic> Definition text ...` paragraphs."""
    paras = _paragraphs(entry["text"])
    if len(paras) < 2:
        return None
    names = [n.strip() for n in paras[0].splitlines() if n.strip()]
    # An acronym among the names (ASCII, TTS) reads better than its expansion.
    term = next((n for n in names if n.isupper() and 2 <= len(n) <= 10), names[0])
    body = ""
    for para in paras[1:3]:  # a paragraph may hold only "<theory>" or "1. {traversal}."
        body = collapse(para)
        for _ in range(3):
            body = re.sub(r"^\d+\.\s*", "", body)  # 1.
            body = re.sub(r"^<[^>]*>\s*", "", body)  # <programming, tool>
            body = re.sub(r"^/[^/]{1,40}/\s*,?\s*", "", body)  # /kash/ pronunciation
            body = re.sub(r"^\((?:[A-Za-z0-9.\- ]{1,20}|\{[^}]*\})\)\s*", "", body)  # (TTS)
        if len(body) >= 12 and not re.fullmatch(r"\{[^}]*\}\.?", body):
            break
    body = strip_xrefs(body)
    if body.lower().startswith(("did you mean", "[details")):
        return None
    defn = _finish(first_sentence(body))
    if not _ok(defn) or defn.startswith("["):
        return None
    return term, defn


def jargon_definition(entry: dict):
    """Jargon File: `term`, an optional `/pron/, n.` line, then (numbered) sense paragraphs."""
    lines = entry["text"].strip("\n").splitlines()
    if not lines:
        return None
    term = lines[0].strip()
    paras = _paragraphs("\n".join(lines[1:]))
    # the first paragraph may be only a pronunciation / part-of-speech line
    while paras and re.fullmatch(
        r"\s*(/[^/]*/,?)?\s*([a-z]+\.,?\s*)*", paras[0].replace("\n", " ")
    ):
        paras = paras[1:]
    body = ""
    for para in paras[:3]:  # skip paragraphs that hold only an etymology "[from ...]"
        body = collapse(para)
        for _ in range(4):
            body = re.sub(r"^(\d+\.\s*)", "", body)  # 1.
            body = re.sub(r"^/[^/]{0,40}/,?\s*", "", body)  # /kluhj/
            body = re.sub(
                r"^((?:adj|adv|n|v|vi|vt|pl|prep|interj|excl|pron|conj)\.,?\s*)+", "", body
            )
            body = re.sub(r"^\[[^\[\]]{1,300}\]\s*", "", body)  # [Usenet] [from ...]
        if body:
            break
    body = strip_xrefs(body)
    defn = _finish(first_sentence(body))
    if not _ok(defn):
        return None
    return term, defn


def devil_definition(entry: dict):
    """The Devil's Dictionary: `WORD, n.  Definition.` then quotations."""
    paras = _paragraphs(entry["text"])
    if not paras:
        return None
    body = collapse(paras[0])
    m = re.match(r"^([^,]{1,40}),\s*((?:[a-z]{1,6}\.\s*)+)(.*)$", body)
    if not m:
        return None
    term = entry["headword"] if not entry["headword"].isupper() else entry["headword"].lower()
    body = strip_xrefs(m.group(3)).replace("_", "")
    defn = _finish(first_sentence(body))
    if not _ok(defn):
        return None
    return term, defn


_GCIDE_SOURCE_LINE = re.compile(
    r"^\s*\[(?:[^\]]*(?:Webster|WordNet|PJC|Century|Note)[^\]]*)\]\s*$", re.M
)
_GCIDE_POS = r"(?:n|v|a|adj|adv|prep|conj|interj|pron|p|pr|imp|pl|sing|t|i|superl|compar|pos)\."


def _drop_balanced(text: str, opener: str = "[", closer: str = "]") -> str:
    """Remove a leading balanced [...] group (etymologies nest [ae] accent codes)."""
    text = text.lstrip()
    if not text.startswith(opener):
        return text
    depth = 0
    for i, c in enumerate(text):
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return text[i + 1 :].lstrip()
    return text


def gcide_definition(entry: dict):
    """GCIDE (Webster 1913 + WordNet): `Word \\Word\\ (pron), n. [etym.] 1. Sense. ...`.
    Takes the first sense of the first part of speech."""
    text = _GCIDE_SOURCE_LINE.sub("", entry["text"])
    head = re.match(r"^\s*([^\\\n]+?)\s*\\[^\\]*\\\s*", text)
    if not head:
        return None
    term = head.group(1).strip()
    rest = collapse(text[head.end() :])
    rest = re.sub(r"^,?\s*\([^()]*\)\s*,?\s*", "", rest)  # (pron),
    m = re.match(rf"^((?:{_GCIDE_POS}\s*(?:&\s*)?,?\s*)+)", rest)
    if not m:
        return None
    rest = rest[m.end() :]
    for _ in range(3):  # [etym.] [imp. & p. p. ...]
        rest = _drop_balanced(rest)
    rest = re.sub(r"^1\.\s*", "", rest)
    rest = re.sub(r"^(\([A-Z][^()]{0,40}\)\s*)+", "", rest)  # (Zool.) (Biochemistry, Genetics)
    rest = re.sub(
        r"\s*\[(?:Colloq|Obs|R|Archaic|Poetic|Slang|Prov\. Eng|Scot|Local|U\. S)\.?\]", "", rest
    )
    rest = re.split(r"\s+(?:Syn|Note):", rest)[0]  # WordNet synonym list
    rest = strip_xrefs(rest)
    defn = _finish(first_sentence(rest))
    if not _ok(defn) or "[" in defn or '"' in defn or "--" in defn:
        return None
    if term[:1].isupper() and term[1:].islower():
        term = term.lower()
    return term, defn


DEFINERS = {
    "foldoc": foldoc_definition,
    "jargon": jargon_definition,
    "devil": devil_definition,
    "gcide": gcide_definition,
}


def clean_fortune(text: str, max_lines: int = 8):
    """One-line version of a fortune, or None for ASCII art, tables, long dialogues and poems
    laid out with indentation. Attribution lines (`\\t\\t-- Author`) are kept as ` -- Author`."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    if not lines or len(lines) > max_lines:
        return None
    body: list[str] = []
    attrib: list[str] = []
    for ln in lines:
        s = ln.strip()
        if s.startswith("--") and (ln.startswith((" ", "\t")) or attrib):
            attrib.append(s)
        elif attrib:
            attrib.append(s)  # attribution continued
        else:
            body.append(s)
    # ASCII art / layout: many non-word characters
    joined = "\n".join(lines)
    if sum(
        not (c.isalnum() or c.isspace() or c in ".,;:'\"!?()-&$%/") for c in joined
    ) > 0.06 * len(joined):
        return None
    if re.search(r"(.)\1{4,}", joined):  # ------ ***** .....
        return None
    out = collapse(" ".join(body))
    if attrib:
        a = collapse(" ".join(attrib)).lstrip("- ").strip()
        out += f" -- {a}"
    out = out.replace("``", '"').replace("''", '"')
    return out or None
