"""The leakage check: pool rows that repeat a validation row or a decontamination reference's row.

Before any ranking, every pool row's full text (`tov_formats.row_text`: all messages, prompt and
completion, the text, or the tokens joined) is normalised (Unicode NFKC, casefolded, punctuation
removed, whitespace collapsed) and compared with every reference row:

- exact: the same BLAKE2b hash of the normalised text (similarity 1.0);
- near: MinHash LSH (`datasketch`) over word n-gram sets finds candidates, and each candidate is
  verified with the exact Jaccard similarity of the two n-gram sets, kept when it reaches the
  threshold (docs/engine.md argues the default).

A flagged row is reported, and with mode "exclude" it is never selected (selection.py's
`excluded`). Torch-free: re-selection and the API-side tools may use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.config import SelectionConfig
from tov_engine.data.files import read_rows
from tov_engine.errors import ConfigError, DataError
from tov_engine.selection import Selection, select, select_random, select_top
from tov_formats import row_text

MODES = ("report", "exclude")
SOURCES = ("validation", "decontaminate")
PREVIEW_CHARS = 200  # of each row's text, kept with a leak
LSH_MARGIN = 0.2  # LSH looks for candidates this far below the threshold: verification decides
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class LeakageConfig:
    """How leaks are looked for and what happens to a flagged row.

    validation / decontaminate: "report" (listed, still selectable) or "exclude" (never selected)
    for matches of the validation set / of a decontamination reference. threshold: the least
    Jaccard similarity of the word `ngram` sets that counts as a near duplicate. num_perm: MinHash
    permutations. enabled: False skips the check (no leaks, nothing excluded).
    """

    validation: str = "report"
    decontaminate: str = "exclude"
    threshold: float = 0.6  # docs/engine.md: above templated rows (demo max 0.5), below edits
    ngram: int = 3
    num_perm: int = 128
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("validation", "decontaminate"):
            if getattr(self, name) not in MODES:
                raise ConfigError(
                    f"leakage.{name} must be one of {MODES}, got {getattr(self, name)!r}"
                )
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
            raise ConfigError(f"leakage.threshold must be a number in (0, 1], got {t!r}")
        if not isinstance(self.ngram, int) or not 1 <= self.ngram <= 16:
            raise ConfigError(f"leakage.ngram must be an integer in 1..16, got {self.ngram!r}")
        if not isinstance(self.num_perm, int) or not 16 <= self.num_perm <= 1024:
            raise ConfigError(
                f"leakage.num_perm must be an integer in 16..1024, got {self.num_perm!r}"
            )

    def mode(self, source: str) -> str:
        return self.validation if source == "validation" else self.decontaminate


@dataclass(frozen=True)
class Reference:
    """A file the pool is checked against: the validation set or a decontamination reference
    (`index`: its position among the job's decontamination references; 0 for validation)."""

    path: Path
    source: str  # "validation" | "decontaminate"
    index: int = 0


@dataclass(frozen=True)
class Leak:
    """One pool row that repeats a row of one reference (its best match there)."""

    pool_index: int
    source: str  # "validation" | "decontaminate"
    reference: str  # the reference file, as given
    reference_index: int  # which decontamination reference (0 for validation)
    match_index: int  # 0-based row of the reference
    similarity: float  # Jaccard of the word n-gram sets; 1.0 for an exact match
    kind: str  # "exact" | "near"
    excluded: bool
    pool_preview: str
    match_preview: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LeakReport:
    """The leaks of a pool, and the (N,) mask of pool rows never to select."""

    leaks: tuple[Leak, ...]
    excluded: np.ndarray  # (N,) bool

    def stats(self) -> dict[str, int]:
        """Counts for a job's stats: leaks by source and kind, distinct flagged/excluded rows."""
        return {
            "validation": sum(1 for x in self.leaks if x.source == "validation"),
            "decontaminate": sum(1 for x in self.leaks if x.source == "decontaminate"),
            "exact": sum(1 for x in self.leaks if x.kind == "exact"),
            "near": sum(1 for x in self.leaks if x.kind == "near"),
            "rows": len({x.pool_index for x in self.leaks}),
            "excluded": int(self.excluded.sum()),
        }


class _Punctuation(dict[int, int | None]):
    """str.translate's table: a punctuation character (category P*) to a space, every other
    character to itself; each character's category looked up once, on first sight."""

    def __missing__(self, code: int) -> int | None:
        value = _SPACE_CODE if unicodedata.category(chr(code)).startswith("P") else code
        self[code] = value
        return value


_SPACE_CODE = ord(" ")
_PUNCTUATION = _Punctuation()


def normalise(text: str) -> str:
    """NFKC, casefold, punctuation removed (Unicode category P*), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION)
    return _SPACE.sub(" ", text).strip()


def text_hash(normalised: str) -> bytes:
    """The exact-match key of a normalised text."""
    return hashlib.blake2b(normalised.encode(), digest_size=16).digest()


def shingles(normalised: str, n: int) -> frozenset[bytes]:
    """The word n-grams of a normalised text (a shorter text is one shingle of all its words)."""
    words = normalised.split(" ")
    if len(words) <= n:
        return frozenset([normalised.encode()])
    return frozenset(" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1))


def jaccard(a: frozenset[bytes], b: frozenset[bytes]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _texts(path: Path) -> Iterator[str]:
    """Every row's full text, in file order (the file's rows are checked as it is read)."""
    for row in read_rows(path):
        yield row_text(row)


def _preview(text: str) -> str:
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


class _Index:
    """The references' rows: exact hashes, n-gram sets and a MinHash LSH index over them."""

    def __init__(self, config: LeakageConfig) -> None:
        from datasketch import MinHash, MinHashLSH  # lazy: scipy loads only when a check runs

        self.config = config
        # CRC-32 of each shingle: C speed and the same in every process (Python's hash() is not)
        self._template = MinHash(num_perm=config.num_perm, seed=1, hashfunc=zlib.crc32)
        self._minhash = MinHash
        lsh_threshold = max(0.05, config.threshold - LSH_MARGIN)
        self.lsh = MinHashLSH(threshold=lsh_threshold, num_perm=config.num_perm)
        self.exact: dict[bytes, dict[int, int]] = {}  # hash -> {reference: first row}
        self.grams: list[frozenset[bytes]] = []
        self.where: list[tuple[int, int]] = []  # key -> (reference, row)
        self.keys: dict[tuple[int, int], int] = {}  # (reference, row) -> key
        self.texts: list[str] = []

    def signature(self, grams: Iterable[bytes]) -> Any:
        m = self._minhash(
            num_perm=self.config.num_perm,
            seed=1,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
            hashfunc=zlib.crc32,
        )
        m.update_batch(list(grams))
        return m

    def add(self, ref: int, path: Path) -> None:
        for row, text in enumerate(_texts(path)):
            norm = normalise(text)
            if not norm:
                continue
            self.exact.setdefault(text_hash(norm), {}).setdefault(ref, row)
            key = len(self.grams)
            grams = shingles(norm, self.config.ngram)
            self.grams.append(grams)
            self.where.append((ref, row))
            self.keys[(ref, row)] = key
            self.texts.append(text)
            self.lsh.insert(key, self.signature(grams), check_duplication=False)

    def text_of(self, ref: int, row: int) -> str:
        key = self.keys.get((ref, row))
        return "" if key is None else self.texts[key]

    def matches(self, text: str) -> dict[int, tuple[int, float, str]]:
        """{reference: (row, similarity, kind)}: the best match of `text` in each reference."""
        norm = normalise(text)
        if not norm:
            return {}
        exact = self.exact.get(text_hash(norm), {})
        best = {ref: (row, 1.0, "exact") for ref, row in exact.items()}
        grams = shingles(norm, self.config.ngram)
        for key in self.lsh.query(self.signature(grams)):
            ref, row = self.where[key]
            if ref in best and best[ref][2] == "exact":
                continue
            similarity = jaccard(grams, self.grams[key])
            if similarity < self.config.threshold:
                continue
            if ref not in best or (similarity, -row) > (best[ref][1], -best[ref][0]):
                best[ref] = (row, similarity, "near")
        return best


def find_leaks(
    pool_path: str | Path, references: Sequence[Reference], config: LeakageConfig
) -> LeakReport:
    """Every pool row's best match in each reference, and the rows to exclude.

    Args:
        pool_path: the pool file. references: the validation set and the decontamination
            references (each file is read and its rows checked; DataError on a bad row).
        config: modes, threshold, n-gram size.
    Returns:
        The LeakReport, leaks in pool order (then reference order).
    """
    pool = Path(pool_path)
    if not config.enabled:
        count = sum(1 for _ in read_rows(pool))
        return LeakReport((), np.zeros(count, dtype=bool))
    for ref in references:
        if ref.source not in SOURCES:
            raise ConfigError(f"a leakage reference's source must be one of {SOURCES}")
        if not Path(ref.path).is_file():
            raise DataError(str(ref.path), 0, "", "the decontamination reference does not exist")
    index = _Index(config)
    for k, ref in enumerate(references):
        index.add(k, Path(ref.path))
    leaks: list[Leak] = []
    flags: list[bool] = []
    for i, text in enumerate(_texts(pool)):
        excluded = False
        for k, (row, similarity, kind) in sorted(index.matches(text).items()):
            ref = references[k]
            drop = config.mode(ref.source) == "exclude"
            excluded = excluded or drop
            leaks.append(
                Leak(
                    pool_index=i,
                    source=ref.source,
                    reference=str(ref.path),
                    reference_index=ref.index,
                    match_index=row,
                    similarity=round(float(similarity), 4),
                    kind=kind,
                    excluded=drop,
                    pool_preview=_preview(text),
                    match_preview=_preview(index.text_of(k, row)),
                )
            )
        flags.append(excluded)
    return LeakReport(tuple(leaks), np.asarray(flags, dtype=bool))


def job_references(
    validation_path: str | Path, decontaminate_against: Sequence[str | Path] = ()
) -> list[Reference]:
    """The references of a job: its validation set, then each decontamination file in order."""
    refs = [Reference(Path(validation_path), "validation", 0)]
    refs += [Reference(Path(p), "decontaminate", i) for i, p in enumerate(decontaminate_against)]
    return refs


# Selection without the excluded rows: the selection runs on the pool with those rows taken out
# and its indices are mapped back, so no excluded row can be picked, by score or at random, and
# the budget (resolved on the whole pool) is filled from the other rows. Without exclusions these
# call the plain functions: identical results.


def _kept(excluded: np.ndarray | None, size: int) -> np.ndarray | None:
    """The indices of the rows that may be selected, or None when nothing is excluded."""
    if excluded is None:
        return None
    mask = np.asarray(excluded, dtype=bool)
    if mask.shape != (size,):
        raise ConfigError(f"the excluded mask has shape {mask.shape}, the pool has {size} rows")
    return np.flatnonzero(~mask) if mask.any() else None


def _budget_left(n: int, kept: np.ndarray, size: int) -> int:
    if n > len(kept):
        raise ConfigError(
            f"the budget of {n} rows exceeds the {len(kept)} rows left after excluding "
            f"{size - len(kept)} leaked rows; lower the budget or use leakage mode 'report'"
        )
    return n


def _mapped(selection: Selection, kept: np.ndarray) -> Selection:
    return dataclasses.replace(selection, indices=kept[selection.indices].astype(np.int64))


def select_excluding(
    excluded: np.ndarray | None,
    *,
    scores: np.ndarray,
    lengths: np.ndarray,
    base_indices: np.ndarray,
    config: SelectionConfig,
    seed: int,
    min_per_bin: int | None = None,
    embeddings: np.ndarray | None = None,
) -> Selection:
    """`selection.select` that never picks a row where `excluded` (an (N,) bool mask) is True."""
    scores = np.asarray(scores, dtype=np.float32)
    kept = _kept(excluded, len(scores))
    if kept is None:
        return select(
            scores=scores,
            lengths=lengths,
            base_indices=base_indices,
            config=config,
            seed=seed,
            min_per_bin=min_per_bin,
            embeddings=embeddings,
        )
    n = _budget_left(config.resolve_budget(len(scores)), kept, len(scores))
    position = np.full(len(scores), -1, dtype=np.int64)
    position[kept] = np.arange(len(kept))
    base = position[np.asarray(base_indices, dtype=np.int64)]
    chosen = select(
        scores=scores[kept],
        lengths=np.asarray(lengths)[kept],
        base_indices=base[base >= 0],
        config=dataclasses.replace(config, budget=n),
        seed=seed,
        min_per_bin=min_per_bin,
        embeddings=None if embeddings is None else np.asarray(embeddings)[kept],
    )
    return _mapped(chosen, kept)


def select_top_excluding(excluded: np.ndarray | None, *, scores: np.ndarray, n: int) -> Selection:
    """`selection.select_top` without the excluded rows."""
    scores = np.asarray(scores, dtype=np.float32)
    kept = _kept(excluded, len(scores))
    if kept is None:
        return select_top(scores=scores, n=n)
    return _mapped(select_top(scores=scores[kept], n=_budget_left(n, kept, len(scores))), kept)


def select_random_excluding(
    excluded: np.ndarray | None, *, pool_size: int, n: int, seed: int
) -> Selection:
    """`selection.select_random` without the excluded rows."""
    kept = _kept(excluded, pool_size)
    if kept is None:
        return select_random(pool_size=pool_size, n=n, seed=seed)
    n = _budget_left(n, kept, pool_size)
    return _mapped(select_random(pool_size=len(kept), n=n, seed=seed), kept)
