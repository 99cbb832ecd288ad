"""Token counts of a job's rows without torch or transformers: the model folder's own
`tokenizer.json` (the `tokenizers` package) and its chat template (jinja2, rendered the way
transformers renders it), following the engine's rules (tov_engine/data/encoding.py): the chat
assistant turns, the completion or all the text carry loss; the first token never does; an EOS is
appended to completions and plain text; a row longer than max_length loses its prompt from the
left first (fit_causal); token classification keeps the first sub-word of each word, truncated.

The counts equal the engine's on the tokenizers this was checked on (tests/test_dry_run_tokens.py
and docs/engine.md give the measured difference); a template feature transformers adds that this
renderer lacks raises TokenCountError rather than guessing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tov_formats import detect_format

JSON_IN_CSV = ("messages", "tokens", "tags")  # the engine's CSV rule (data/files.py)
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


class TokenCountError(ValueError):
    """The rows or the tokenizer cannot be counted here; the message says what and where."""


@dataclass(frozen=True)
class SetCounts:
    """Per-row token counts of one file after the engine's truncation rule."""

    seq_lengths: np.ndarray  # (N,) int64 tokens per row as the model sees it
    loss_lengths: np.ndarray  # (N,) int64 loss-bearing tokens per row
    truncated: int  # rows cut to max_length

    @property
    def rows(self) -> int:
        return len(self.seq_lengths)

    @property
    def tokens(self) -> int:
        return int(self.seq_lengths.sum())

    @property
    def loss_tokens(self) -> int:
        return int(self.loss_lengths.sum())

    @property
    def rows_without_loss_tokens(self) -> int:
        return int((self.loss_lengths == 0).sum())


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a validated JSONL, CSV or Parquet file (CSV list columns JSON-decoded)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open("r", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif suffix == ".csv":
        with path.open("r", encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle):
                for key in JSON_IN_CSV:
                    if record.get(key) is not None:
                        record[key] = json.loads(record[key])
                yield dict(record)
    else:
        raise TokenCountError(f"{path.name}: unknown file type {suffix!r} (jsonl, csv, parquet)")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value.get("content")) if value.get("content") is not None else None
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


class TokenCounter:
    """The model folder's tokenizer and chat template, counting rows as the engine encodes them.

    Args:
        model_dir: a local model folder with tokenizer.json (a fast tokenizer, as the engine
            requires).
    """

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        file = model_dir / "tokenizer.json"
        if not file.is_file():
            raise TokenCountError(
                f"model folder '{model_dir.name}' has no tokenizer.json; the dry run counts "
                "tokens with the fast tokenizer the engine uses"
            )
        self.tokenizer = Tokenizer.from_file(str(file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        config = {**_read_json(model_dir / "special_tokens_map.json")}
        config.update(_read_json(model_dir / "tokenizer_config.json"))
        self.specials = {
            f"{n}_token": t
            for n in SPECIAL_NAMES
            if (t := _token_text(config.get(f"{n}_token"))) is not None
        }
        eos = self.specials.get("eos_token")
        self.eos_id = self.tokenizer.token_to_id(eos) if eos is not None else None
        self.template = self._chat_template(model_dir, config)
        self._compiled: Any = None

    @staticmethod
    def _chat_template(model_dir: Path, config: dict[str, Any]) -> str | None:
        jinja = model_dir / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        raw = config.get("chat_template")
        if isinstance(raw, list):  # named templates: the engine uses the default one
            named = {t.get("name"): t.get("template") for t in raw if isinstance(t, dict)}
            raw = named.get("default")
        return raw if isinstance(raw, str) else None

    # ---- rendering -------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        if self._compiled is None:
            self._compiled = _compile(self.template or "")
        return str(
            self._compiled.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=None,
                documents=None,
                **self.specials,
            )
        )

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def _append_eos(self, ids: list[int]) -> list[int]:
        eos = self.eos_id
        return [*ids, eos] if eos is not None and (not ids or ids[-1] != eos) else ids

    def causal(self, record: dict[str, Any]) -> tuple[int, list[bool]]:
        """(tokens, loss mask) of one causal-LM row, untruncated (encoding.encode_causal)."""
        fmt = detect_format(record)
        if fmt == "chat":
            ids_len, mask = self._chat(record["messages"])
        elif fmt == "prompt_completion":
            prompt = self._ids(record["prompt"], True) if record["prompt"] else []
            answer = self._append_eos(self._ids(record["completion"], False))
            ids_len, mask = len(prompt) + len(answer), [False] * len(prompt) + [True] * len(answer)
        elif fmt == "text":
            ids = self._append_eos(self._ids(record["text"], True))
            ids_len, mask = len(ids), [True] * len(ids)
        else:
            raise TokenCountError(
                f"a causal LM cannot train on {fmt} rows; use task token_classification"
            )
        if mask:
            mask[0] = False
        return ids_len, mask

    def _chat(self, messages: list[dict[str, Any]]) -> tuple[int, list[bool]]:
        if not self.template:
            raise TokenCountError("the tokenizer has no chat template; chat-format data needs one")
        full = self._render(messages, False)
        spans: list[tuple[int, int]] = []
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = self._render(messages[:k], True) if k else ""
            upto = self._render(messages[: k + 1], False)
            if not (full.startswith(upto) and upto.startswith(start)):
                raise TokenCountError(
                    "the chat template does not render conversations prefix by prefix"
                )
            spans.append((len(start), len(upto)))
        enc = self.tokenizer.encode(full, add_special_tokens=False)
        mask = [any(a <= s < b for a, b in spans) for s, _ in _char_offsets(full, enc)]
        return len(enc.ids), mask

    def tagged(self, record: dict[str, Any], max_length: int) -> tuple[int, int, bool]:
        """(tokens, loss tokens, truncated) of a tokens+tags row (encoding.encode_tagged)."""
        self.tokenizer.enable_truncation(max_length)
        try:
            enc = self.tokenizer.encode(record["tokens"], is_pretokenized=True)
        finally:
            self.tokenizer.no_truncation()
        words = {w for w in enc.word_ids if w is not None}
        return len(enc.ids), len(words), len(words) < len(record["tokens"])


def _char_offsets(text: str, enc: Any) -> list[tuple[int, int]]:
    """Character offsets of each token (transformers reports characters; `tokenizers` already
    does for a str input)."""
    return [(int(a), int(b)) for a, b in enc.offsets]


def _compile(template: str) -> Any:
    """The template compiled as transformers compiles chat templates: a sandboxed environment
    with trim_blocks, lstrip_blocks, loop controls, raise_exception, strftime_now, a tojson that
    does not escape HTML, and `{% generation %}` blocks rendered as their body."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TokenCountError(f"the chat template does not compile here: {exc}") from exc


def fit_length(length: int, mask: list[bool], max_length: int) -> tuple[int, int]:
    """(tokens, loss tokens) after the engine's fit_causal: the prompt cut from the left first
    (one token before the first loss-bearing one kept), then the response's end."""
    if length <= max_length:
        return length, sum(mask)
    first = next((i for i, m in enumerate(mask) if m), length)
    drop = min(length - max_length, max(first - 1, 0))
    kept = mask[drop:][:max_length]
    return len(kept), sum(kept)


def count_file(
    counter: TokenCounter, path: Path, *, task: str, max_length: int, limit: int | None = None
) -> SetCounts:
    """Count every row of a dataset file (the first `limit` rows when given).

    Args:
        counter: the model's tokenizer. path: a validated dataset file.
        task: causal_lm | token_classification. max_length: tokens per row.
    """
    seq: list[int] = []
    loss: list[int] = []
    truncated = 0
    for i, record in enumerate(read_records(path)):
        if limit is not None and i >= limit:
            break
        if task == "token_classification":
            n, m, cut = counter.tagged(record, max_length)
        else:
            length, mask = counter.causal(record)
            cut = length > max_length
            n, m = fit_length(length, mask, max_length)
        seq.append(n)
        loss.append(m)
        truncated += int(cut)
    return SetCounts(
        seq_lengths=np.asarray(seq, dtype=np.int64),
        loss_lengths=np.asarray(loss, dtype=np.int64),
        truncated=truncated,
    )
