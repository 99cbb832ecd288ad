"""Write the malformed-input corpus (RELIABILITY.md S2) to tests/security/corpus/.

    python -m tests.security.make_corpus

Each case is a file plus a line in corpus/manifest.json: how to upload it (Content-Type, extra
headers), the status the API must answer and a phrase its problem detail (or one of its `errors`)
must contain. The corpus is run with small limits (CORPUS_SETTINGS) so that "huge" inputs stay
small on disk. The output is deterministic: running the script again rewrites identical files.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CORPUS = Path(__file__).resolve().parent / "corpus"
# The API settings the corpus is checked under (test_corpus.py applies them).
CORPUS_SETTINGS = {"max_line_bytes": 4096, "max_rows": 1000, "max_upload_bytes": 4 * 1024 * 1024}

JSONL = "application/x-ndjson"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"


@dataclass
class Case:
    name: str
    file: str
    content_type: str
    status: int
    expect: str  # a phrase of the detail or of one error's reason/field
    headers: dict[str, str] = field(default_factory=dict)
    field: str | None = None  # when set: some error names this field


CASES: list[Case] = []
_seen: set[str] = set()


def add(
    name: str,
    data: bytes,
    *,
    ext: str,
    content_type: str,
    status: int,
    expect: str,
    headers: dict[str, str] | None = None,
    field_name: str | None = None,
) -> None:
    assert name not in _seen, name
    _seen.add(name)
    file = f"{len(CASES) + 1:03d}-{name}.{ext}"
    (CORPUS / file).write_bytes(data)
    CASES.append(Case(name, file, content_type, status, expect, headers or {}, field_name))


def jl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD_PC = {"prompt": "What is 2+2?", "completion": "4"}
GOOD_TEXT = {"text": "hello world"}
GOOD_CHAT = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
}
GOOD_TOKENS = {"tokens": ["John", "lives"], "tags": ["B-PER", "O"]}


def jsonl_cases() -> None:
    def bad(name: str, body: bytes, expect: str, field_name: str | None = None) -> None:
        add(
            name,
            body,
            ext="jsonl",
            content_type=JSONL,
            status=422,
            expect=expect,
            field_name=field_name,
        )

    good = jl([GOOD_PC])
    # Malformed JSON, one per line shape.
    malformed = {
        "unclosed-object": b'{"prompt": "a", "completion": "b"\n',
        "unclosed-string": b'{"prompt": "a, "completion": "b"}\n',
        "single-quotes": b"{'prompt': 'a', 'completion': 'b'}\n",
        "trailing-comma": b'{"prompt": "a", "completion": "b",}\n',
        "unquoted-key": b'{prompt: "a", "completion": "b"}\n',
        "comment": b'{"text": "a"} // comment\n',
        "two-objects-one-line": b'{"text": "a"}{"text": "b"}\n',
        "bare-word": b"hello\n",
        "missing-colon": b'{"text" "a"}\n',
        "missing-value": b'{"text": }\n',
        "extra-close": b'{"text": "a"}}\n',
        "array-unclosed": b'[{"text": "a"}\n',
        "raw-control-char": b'{"text": "a\x01b"}\n',
        "raw-tab-in-string": b'{"text": "a\tb"}\n',
        "bad-escape": b'{"text": "a\\qb"}\n',
        "short-unicode-escape": b'{"text": "a\\u12"}\n',
        "leading-zero-number": b'{"text": "a", "n": 012}\n',
        "plus-number": b'{"text": "a", "n": +1}\n',
        "hex-number": b'{"text": "a", "n": 0x10}\n',
        "dot-number": b'{"text": "a", "n": .5}\n',
        "undefined": b'{"text": undefined}\n',
        "python-none": b'{"text": None}\n',
        "python-true": b'{"text": "a", "b": True}\n',
        "utf8-bom": b'\xef\xbb\xbf{"text": "a"}\n',
        "exponent-without-digits": b'{"text": "a", "n": 1e}\n',
        "garbage-after-good": good + b"\x00\x01\x02 not json\n",
        "nul-byte-line": b"\x00\n",
        "only-brace": b"{\n",
        "json-then-garbage": b'{"text": "a"} trailing\n',
        "nested-unclosed": b'{"messages": [{"role": "user", "content": "x"}\n',
    }
    for name, body in malformed.items():
        bad(f"jsonl-malformed-{name}", body, "malformed JSON")

    # Not UTF-8.
    bad_utf8 = {
        "ff-byte": b'{"text": "\xff"}\n',
        "fe-ff": b'{"text": "\xfe\xff"}\n',
        "lone-continuation": b'{"text": "\x80"}\n',
        "truncated-2byte": b'{"text": "\xc3"}\n',
        "truncated-3byte": b'{"text": "\xe2\x82"}\n',
        "truncated-4byte": b'{"text": "\xf0\x9f\x98"}\n',
        "overlong-slash": b'{"text": "\xc0\xaf"}\n',
        "overlong-nul": b'{"text": "\xc0\x80"}\n',
        "encoded-surrogate": b'{"text": "\xed\xa0\x80"}\n',
        "above-max-codepoint": b'{"text": "\xf4\x90\x80\x80"}\n',
        "latin1-text": '{"text": "caf\u00e9 na\u00efve"}\n'.encode("latin-1"),
        "utf16-le": '{"text": "a"}\n'.encode("utf-16-le"),
        "utf16-bom": '{"text": "a"}\n'.encode("utf-16"),
        "cp1252-quotes": b'{"text": "\x93quoted\x94"}\n',
        "second-line": good + b'{"prompt": "\xff", "completion": "b"}\n',
    }
    for name, body in bad_utf8.items():
        expect = "malformed JSON" if name.startswith("utf16") else "invalid UTF-8"
        if name == "utf16-le":
            expect = "malformed JSON"
        bad(f"jsonl-utf8-{name}", body, expect)

    # NaN and infinities, in several places.
    for token in ("NaN", "Infinity", "-Infinity"):
        for where, body in {
            "extra-field": '{"text": "a", "w": %s}\n',
            "nested": '{"text": "a", "meta": {"w": [1, %s]}}\n',
            "tag": '{"tokens": ["a"], "tags": [%s]}\n',
            "completion": '{"prompt": "a", "completion": %s}\n',
        }.items():
            name = f"jsonl-{token.lower()}-{where}"
            bad(name, (body % token).encode(), f"{token} is not allowed")
    for name, literal in {"1e999": "1e999", "neg-1e999": "-1e999", "1e400": "1E400"}.items():
        bad(f"jsonl-overflow-{name}", f'{{"text": "a", "w": {literal}}}\n'.encode(), "out of range")

    # Lines over the limit (4096 bytes in the corpus settings).
    long_text = "x" * 5000
    bad("jsonl-huge-line-first", jl([{"text": long_text}]), "line longer than 4096 bytes")
    bad(
        "jsonl-huge-line-middle",
        jl([GOOD_TEXT, {"text": long_text}, GOOD_TEXT]),
        "line longer than 4096 bytes",
    )
    bad(
        "jsonl-huge-line-no-newline",
        good + b'{"text": "' + b"y" * 9000,
        "line longer than 4096 bytes",
    )
    bad("jsonl-huge-whitespace-line", b" " * 5000 + b"\n" + good, "line longer than 4096 bytes")

    # Empty and blank.
    bad("jsonl-empty", b"", "no rows")
    bad("jsonl-only-newlines", b"\n\n\n", "no rows")
    bad("jsonl-only-spaces", b"   \n \t \n", "no rows")
    bad("jsonl-blank-line-inside", good + b"\n" + good, "empty line inside the file")
    bad("jsonl-blank-line-first", b"\n" + good, "empty line inside the file")

    # Duplicate keys.
    bad("jsonl-duplicate-top-key", b'{"text": "a", "text": "b"}\n', "duplicate key 'text'")
    bad(
        "jsonl-duplicate-nested-key",
        b'{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}\n',
        "duplicate key 'role'",
    )
    bad("jsonl-duplicate-extra-key", b'{"text": "a", "m": {"k": 1, "k": 2}}\n', "duplicate key 'k'")
    bad(
        "jsonl-duplicate-second-row",
        good + b'{"prompt": "a", "prompt": "b", "completion": "c"}\n',
        "duplicate key 'prompt'",
    )

    # Deep nesting.
    for depth in (33, 100, 5000, 20_000):
        body = b'{"text": "a", "d": ' + b"[" * depth + b"]" * depth + b"}\n"
        if len(body) > 4096:
            # Over the line limit: still refused, for its length.
            bad(f"jsonl-deep-arrays-{depth}", body, "line longer than 4096 bytes")
        else:
            bad(f"jsonl-deep-arrays-{depth}", body, "nesting deeper than 32 levels")
    for depth in (40, 400):
        body = b'{"text": "a", "d": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}\n"
        bad(f"jsonl-deep-objects-{depth}", body, "nesting deeper than 32 levels")

    # Rows that are not objects.
    for name, body in {
        "array": b'["a", "b"]\n',
        "string": b'"text"\n',
        "number": b"42\n",
        "null": b"null\n",
        "true": b"true\n",
        "empty-array": b"[]\n",
    }.items():
        bad(f"jsonl-row-{name}", body, "expected a JSON object")

    # Wrong schema.
    schema = {
        "unknown-format": ({"foo": "bar"}, "unknown row format", ""),
        "empty-object": ({}, "unknown row format", ""),
        "text-empty": ({"text": ""}, "must be a non-empty string", "text"),
        "text-spaces": ({"text": "   "}, "must be a non-empty string", "text"),
        "text-number": ({"text": 5}, "must be a non-empty string", "text"),
        "text-null": ({"text": None}, "must be a non-empty string", "text"),
        "text-list": ({"text": ["a"]}, "must be a non-empty string", "text"),
        "prompt-only": ({"prompt": "a"}, "must be a non-empty string", "completion"),
        "completion-empty": (
            {"prompt": "a", "completion": ""},
            "must be a non-empty string",
            "completion",
        ),
        "completion-number": (
            {"prompt": "a", "completion": 1},
            "must be a non-empty string",
            "completion",
        ),
        "prompt-number": ({"prompt": 1, "completion": "b"}, "must be a string", "prompt"),
        "prompt-object": ({"prompt": {"a": 1}, "completion": "b"}, "must be a string", "prompt"),
        "messages-string": ({"messages": "hi"}, "must be a non-empty list", "messages"),
        "messages-empty": ({"messages": []}, "must be a non-empty list", "messages"),
        "messages-item-string": ({"messages": ["hi"]}, "must be an object", "messages[0]"),
        "messages-bad-role": (
            {"messages": [{"role": "robot", "content": "x"}]},
            "must be one of",
            "messages[0].role",
        ),
        "messages-no-role": (
            {"messages": [{"content": "x"}]},
            "must be one of",
            "messages[0].role",
        ),
        "messages-content-number": (
            {"messages": [{"role": "assistant", "content": 3}]},
            "must be a string",
            "messages[0].content",
        ),
        "messages-content-null": (
            {"messages": [{"role": "assistant", "content": None}]},
            "must be a string",
            "messages[0].content",
        ),
        "messages-no-assistant": (
            {"messages": [{"role": "user", "content": "x"}]},
            "assistant turn",
            "messages",
        ),
        "messages-empty-assistant": (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]},
            "assistant turn",
            "messages",
        ),
        "tokens-empty": ({"tokens": [], "tags": []}, "non-empty list", "tokens"),
        "tokens-not-list": ({"tokens": "a b", "tags": ["O", "O"]}, "non-empty list", "tokens"),
        "tokens-numbers": ({"tokens": [1, 2], "tags": ["O", "O"]}, "non-empty list", "tokens"),
        "tokens-empty-string": (
            {"tokens": ["a", ""], "tags": ["O", "O"]},
            "non-empty list",
            "tokens",
        ),
        "tags-missing": ({"tokens": ["a"]}, "list of strings or integers", "tags"),
        "tags-short": ({"tokens": ["a", "b"], "tags": ["O"]}, "has 1 entries for 2 tokens", "tags"),
        "tags-long": ({"tokens": ["a"], "tags": ["O", "O"]}, "has 2 entries for 1 tokens", "tags"),
        "tags-mixed": (
            {"tokens": ["a", "b"], "tags": ["O", 1]},
            "all strings or all integers",
            "tags",
        ),
        "tags-bool": ({"tokens": ["a"], "tags": [True]}, "all strings or all integers", "tags"),
        "tags-float": ({"tokens": ["a"], "tags": [1.5]}, "all strings or all integers", "tags"),
        "tags-null": ({"tokens": ["a"], "tags": [None]}, "all strings or all integers", "tags"),
    }
    for name, (row, expect, field_name) in schema.items():
        bad(f"jsonl-schema-{name}", jl([row]), expect, field_name or None)
    bad("jsonl-format-switch", jl([GOOD_PC, GOOD_TEXT]), "must be a non-empty string", "completion")
    bad(
        "jsonl-format-switch-chat", jl([GOOD_CHAT, GOOD_PC]), "must be a non-empty list", "messages"
    )
    bad("jsonl-too-many-rows", jl([GOOD_TEXT] * 1001), "more than 1000 rows")
    wide_rows = [{"text": "a", **{f"k{j}_{i}": 0 for i in range(250)}} for j in range(5)]
    bad("jsonl-too-many-columns", jl(wide_rows), "more than 1000 distinct columns")
    bad("jsonl-lone-surrogate-escape", b'{"text": "a\\ud800b"}\n', "lone surrogate")


def compressed_cases() -> None:
    payload = jl([GOOD_PC] * 10)
    bomb = b'{"text": "' + b"a" * (20 * 1024 * 1024) + b'"}\n'
    bodies = {
        "gzip": gzip.compress(payload, mtime=0),
        "gzip-bomb-20mib": gzip.compress(bomb, compresslevel=9, mtime=0),
        "zstd": pa.compress(payload, codec="zstd", asbytes=True),
        "zstd-bomb-20mib": pa.compress(bomb, codec="zstd", asbytes=True),
        "lz4": pa.compress(payload, codec="lz4", asbytes=True),
        "zip": _zip(payload),
        "xz-magic": b"\xfd7zXZ\x00" + b"\x00" * 64,
        "bzip2-magic": b"BZh91AY&SY" + b"\x00" * 64,
        "7z-magic": b"7z\xbc\xaf\x27\x1c" + b"\x00" * 64,
        "zlib": __import__("zlib").compress(payload),
    }
    label = {
        "gzip-bomb-20mib": "gzip",
        "zstd-bomb-20mib": "zstd",
        "xz-magic": "xz",
        "bzip2-magic": "bzip2",
        "7z-magic": "7z",
    }
    for name, body in bodies.items():
        kind = label.get(name, name)
        for content_type in (JSONL, "application/octet-stream"):
            suffix = "raw" if content_type == JSONL else "octet"
            add(
                f"compressed-{name}-{suffix}",
                body,
                ext="bin",
                content_type=content_type,
                status=415,
                expect=f"{kind}-compressed",
            )
    add(
        "compressed-gzip-as-csv",
        bodies["gzip"],
        ext="bin",
        content_type=CSV,
        status=415,
        expect="gzip-compressed",
    )
    add(
        "compressed-gzip-as-parquet",
        bodies["gzip"],
        ext="bin",
        content_type=PARQUET,
        status=415,
        expect="gzip-compressed",
    )
    # A Content-Encoding header: refused before any byte is read.
    for encoding in ("gzip", "deflate", "br", "zstd", "x-gzip", "compress", "gzip, identity"):
        data = bodies["gzip"] if "gzip" in encoding else payload
        add(
            f"content-encoding-{encoding.replace(', ', '-').replace(' ', '')}",
            data,
            ext="bin",
            content_type=JSONL,
            status=415,
            expect="Content-Encoding",
            headers={"Content-Encoding": encoding},
        )
    add(
        "content-encoding-gzip-bomb",
        bodies["gzip-bomb-20mib"],
        ext="bin",
        content_type=JSONL,
        status=415,
        expect="Content-Encoding",
        headers={"Content-Encoding": "gzip"},
    )


def _zip(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("data.jsonl", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, payload)
    return buffer.getvalue()


def _parquet(table: pa.Table, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **kwargs)
    return buffer.getvalue()


def parquet_cases() -> None:
    def bad(
        name: str,
        body: bytes,
        expect: str,
        field_name: str | None = None,
        status: int = 422,
        content_type: str = PARQUET,
    ) -> None:
        add(
            f"parquet-{name}",
            body,
            ext="parquet",
            content_type=content_type,
            status=status,
            expect=expect,
            field_name=field_name,
        )

    good = _parquet(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"]}))
    # Broken files.
    bad("empty", b"", "not a Parquet file")
    bad("magic-only", b"PAR1", "too small to be a Parquet file")
    bad("tiny", b"PAR1PAR1", "too small to be a Parquet file")
    bad("no-tail-magic", good[:-4] + b"XXXX", "missing PAR1 magic")
    bad("truncated-half", good[: len(good) // 2], "missing PAR1 magic")
    bad("truncated-footer", good[:-9] + good[-4:], "does not fit the file")
    bad(
        "footer-length-huge",
        good[:-8] + (2**31 - 1).to_bytes(4, "little") + b"PAR1",
        "does not fit the file",
    )
    bad(
        "footer-length-negative",
        good[:-8] + (2**32 - 5).to_bytes(4, "little") + b"PAR1",
        "does not fit the file",
    )
    bad(
        "footer-length-zero",
        good[:-8] + (0).to_bytes(4, "little") + b"PAR1",
        "does not fit the file",
    )
    bad("encrypted-footer", good[:-4] + b"PARE", "encrypted Parquet")
    bad(
        "garbage-between-magic",
        b"PAR1" + bytes(range(256)) * 4 + (100).to_bytes(4, "little") + b"PAR1",
        "unreadable Parquet metadata",
    )
    footer_len = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - footer_len
    scrambled = bytearray(good)
    for i in range(start, start + footer_len, 3):
        scrambled[i] ^= 0x5A
    bad("scrambled-footer", bytes(scrambled), "unreadable Parquet metadata")
    # Corrupt data pages (the footer is fine): the rows cannot be read.
    corrupt_pages = bytearray(good)
    for i in range(4, start):
        corrupt_pages[i] ^= 0xFF
    bad("corrupt-pages", bytes(corrupt_pages), "unreadable Parquet data")
    snappy = _parquet(pa.table({"text": ["hello world " * 50] * 20}), compression="snappy")
    footer_len = int.from_bytes(snappy[-8:-4], "little")
    corrupt = bytearray(snappy)
    for i in range(40, len(snappy) - 8 - footer_len - 40):
        corrupt[i] = 0x00
    bad("zeroed-compressed-pages", bytes(corrupt), "unreadable Parquet data")
    # Mismatched declarations.
    bad("jsonl-declared-parquet", jl([GOOD_PC]), "not a Parquet file")
    add(
        "parquet-sent-as-jsonl",
        good,
        ext="parquet",
        content_type=JSONL,
        status=422,
        expect="Parquet file but was sent as jsonl",
    )
    add(
        "parquet-sent-as-csv",
        good,
        ext="parquet",
        content_type=CSV,
        status=422,
        expect="Parquet file but was sent as csv",
    )
    # Caps read from the metadata.
    bad(
        "too-many-rows",
        _parquet(pa.table({"text": ["a"] * 1001})),
        "declares 1001 rows; the limit is 1000",
    )
    bomb = _parquet(
        pa.table({"text": pa.array(["a" * (1 << 20)] * 100)}),
        compression="zstd",
        compression_level=19,
        use_dictionary=False,
        data_page_size=1 << 30,
    )
    bad("bomb-100mib-zstd", bomb, "decompression bomb")
    bomb_gzip = _parquet(
        pa.table({"text": pa.array(["b" * (1 << 20)] * 80)}),
        compression="gzip",
        use_dictionary=False,
        data_page_size=1 << 30,
    )
    bad("bomb-80mib-gzip", bomb_gzip, "decompression bomb")
    wide = pa.table({"text": ["a"], **{f"c{i}": [i] for i in range(1001)}})
    bad("too-many-columns", _parquet(wide), "1002 leaf columns")
    nested_type: pa.DataType = pa.int32()
    for i in range(40):
        nested_type = pa.struct([pa.field(f"f{i}", nested_type)])
    deep = pa.table({"text": ["a"], "deep": pa.array([None], type=nested_type)})
    bad("deep-schema", _parquet(deep), "nests deeper than 32 levels")

    # Wrong schema.
    def tbl(**cols: Any) -> bytes:
        return _parquet(pa.table(cols))

    schema_cases = {
        "no-known-columns": (tbl(foo=["a"], bar=["b"]), "unknown row format", None),
        "text-int": (tbl(text=[1, 2]), "expected string", "text"),
        "text-float-nan": (tbl(text=[float("nan")]), "expected string", "text"),
        "text-list": (tbl(text=[["a"]]), "expected string", "text"),
        "text-binary": (tbl(text=pa.array([b"a"], pa.binary())), "expected string", "text"),
        "prompt-missing-completion": (tbl(prompt=["a"]), "missing column", "completion"),
        "completion-missing-prompt": (tbl(completion=["a"]), "missing column", "prompt"),
        "completion-int": (tbl(prompt=["a"], completion=[1]), "expected string", "completion"),
        "messages-string": (
            tbl(messages=["hi"]),
            "expected list<struct<role, content>>",
            "messages",
        ),
        "messages-list-of-strings": (
            tbl(messages=[["hi"]]),
            "expected list<struct<role, content>>",
            "messages",
        ),
        "messages-no-content": (
            tbl(messages=[[{"role": "user"}]]),
            "expected list<struct<role: string, content: string>>",
            "messages",
        ),
        "messages-content-int": (
            tbl(messages=[[{"role": "user", "content": 1}]]),
            "expected list<struct<role: string",
            "messages",
        ),
        "tokens-missing-tags": (tbl(tokens=[["a"]]), "missing column", "tags"),
        "tags-missing-tokens": (tbl(tags=[["O"]]), "missing column", "tokens"),
        "tokens-ints": (tbl(tokens=[[1]], tags=[["O"]]), "expected list<string>", "tokens"),
        "tokens-string": (tbl(tokens=["a b"], tags=[["O"]]), "expected list<string>", "tokens"),
        "tags-floats": (
            tbl(tokens=[["a"]], tags=[[1.5]]),
            "expected list<string> or list<int>",
            "tags",
        ),
        "tags-string": (
            tbl(tokens=[["a"]], tags=["O"]),
            "expected list<string> or list<int>",
            "tags",
        ),
    }
    for name, (body, expect, field_name) in schema_cases.items():
        bad(f"schema-{name}", body, expect, field_name)
    duplicate = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"])
    bad("duplicate-columns", _parquet(duplicate), "duplicate column name", "text")
    # Bad values in well-typed columns.
    values = {
        "text-null": (
            tbl(text=pa.array([None], pa.string())),
            "must be a non-empty string",
            "text",
        ),
        "text-empty": (tbl(text=["ok", ""]), "must be a non-empty string", "text"),
        "completion-null": (
            tbl(prompt=["a"], completion=pa.array([None], pa.string())),
            "must be a non-empty string",
            "completion",
        ),
        "prompt-null": (
            tbl(prompt=pa.array([None], pa.string()), completion=["b"]),
            "must be a string",
            "prompt",
        ),
        "messages-null": (
            tbl(
                messages=pa.array(
                    [None], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
                )
            ),
            "must be a non-empty list",
            "messages",
        ),
        "messages-empty": (
            tbl(
                messages=pa.array(
                    [[]], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
                )
            ),
            "must be a non-empty list",
            "messages",
        ),
        "messages-bad-role": (
            tbl(messages=[[{"role": "robot", "content": "x"}]]),
            "must be one of",
            "messages[0].role",
        ),
        "messages-no-assistant": (
            tbl(messages=[[{"role": "user", "content": "x"}]]),
            "assistant turn",
            "messages",
        ),
        "tags-mismatch": (
            tbl(tokens=[["a", "b"]], tags=[["O"]]),
            "has 1 entries for 2 tokens",
            "tags",
        ),
        "tokens-empty": (
            tbl(tokens=pa.array([[]], pa.list_(pa.string())), tags=[["O"]]),
            "non-empty list",
            "tokens",
        ),
        "zero-rows": (tbl(text=pa.array([], pa.string())), "no rows", None),
    }
    for name, (body, expect, field_name) in values.items():
        bad(f"value-{name}", body, expect, field_name)


def csv_cases() -> None:
    def bad(name: str, body: bytes, expect: str, field_name: str | None = None) -> None:
        add(
            f"csv-{name}",
            body,
            ext="csv",
            content_type=CSV,
            status=422,
            expect=expect,
            field_name=field_name,
        )

    header = b"prompt,completion\n"
    bad("empty", b"", "the file is empty")
    bad("only-header", header, "no rows")
    bad("only-blank-lines", b"\n\n", "the first line is empty")
    bad("bom", b"\xef\xbb\xbfprompt,completion\na,b\n", "byte order mark")
    bad("duplicate-header", b"text,text\na,b\n", "duplicate column name", "text")
    bad("unknown-header", b"foo,bar\na,b\n", "unknown row format")
    bad("no-header-just-data", b"What is 2+2?,4\n", "unknown row format")
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    names = [f"{a}{b}" for a in chars for b in chars]
    bad("too-many-columns", ",".join(names[:1001]).encode() + b",text\n", "more than 1000 columns")
    bad("too-few-fields", header + b"a\n", "has 1 fields; the header has 2")
    bad("too-many-fields", header + b"a,b,c\n", "has 3 fields; the header has 2")
    bad("unterminated-quote", header + b'"a,b\n', "malformed CSV")
    bad("space-after-quote", header + b'"a" "b",c\n', "malformed CSV")
    bad("junk-after-quote", header + b'"a"x,b\n', "malformed CSV")
    bad("bare-cr-in-field", header + b"a\rb,c\n", "malformed CSV")
    bad("bad-utf8-header", b"pr\xffompt,completion\na,b\n", "invalid UTF-8")
    bad("bad-utf8-row", header + b"a,\xc3\n", "invalid UTF-8")
    bad("latin1", header + "caf\u00e9,b\n".encode("latin-1"), "invalid UTF-8")
    bad("utf16", "prompt,completion\na,b\n".encode("utf-16"), "invalid UTF-8")
    bad("huge-line", header + b"a," + b"x" * 5000 + b"\n", "line longer than 4096 bytes")
    bad(
        "huge-quoted-multiline",
        header + b'a,"' + (b"y" * 100 + b"\n") * 2000 + b'"\n',
        "field larger than field limit",
    )
    bad("completion-empty", header + b"a,\n", "must be a non-empty string", "completion")
    bad("completion-spaces", header + b'a,"   "\n', "must be a non-empty string", "completion")
    bad("text-empty", b'text\nok\n""\n', "must be a non-empty string", "text")
    bad("too-many-rows", b"text\n" + b"a\n" * 1001, "more than 1000 rows")
    # JSON cells.
    tok = b"tokens,tags\n"
    bad("tokens-not-json", tok + b'a b,"[""O""]"\n', "expected JSON in this cell", "tokens")
    bad("tags-not-json", tok + b'"[""a""]",O\n', "expected JSON in this cell", "tags")
    bad("tokens-nan", tok + b'"[NaN]","[""O""]"\n', "NaN is not allowed", "tokens")
    bad("tags-infinity", tok + b'"[""a""]","[Infinity]"\n', "Infinity is not allowed", "tags")
    bad(
        "tokens-deep",
        tok + b'"' + b"[" * 40 + b"]" * 40 + b'","[]"\n',
        "nesting deeper than 32 levels",
        "tokens",
    )
    bad("tags-mismatch", tok + b'"[""a"",""b""]","[""O""]"\n', "has 1 entries for 2 tokens", "tags")
    bad("tokens-numbers", tok + b'"[1,2]","[""O"",""O""]"\n', "non-empty list", "tokens")
    bad("tags-mixed", tok + b'"[""a"",""b""]","[""O"",1]"\n', "all strings or all integers", "tags")
    bad("messages-not-json", b"messages\nhello\n", "expected JSON in this cell", "messages")
    bad(
        "messages-dup-keys",
        b'messages\n"[{""role"": ""user"", ""role"": ""assistant"", ""content"": ""x""}]"\n',
        "duplicate key 'role'",
        "messages",
    )
    bad(
        "messages-no-assistant",
        b'messages\n"[{""role"": ""user"", ""content"": ""x""}]"\n',
        "assistant turn",
        "messages",
    )
    bad(
        "messages-object",
        b'messages\n"{""role"": ""user""}"\n',
        "must be a non-empty list",
        "messages",
    )
    bad(
        "text-with-bad-tags-cell",
        b"text,tags\nhello,not-json\n",
        "expected JSON in this cell",
        "tags",
    )


def other_cases() -> None:
    body = jl([GOOD_PC])
    for content_type in (
        "application/xml",
        "multipart/form-data",
        "image/png",
        "application/x-www-form-urlencoded",
        "text/html",
    ):
        add(
            f"content-type-{content_type.replace('/', '-')}",
            body,
            ext="bin",
            content_type=content_type,
            status=415,
            expect="is not a dataset upload",
        )


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir(parents=True)
    jsonl_cases()
    compressed_cases()
    parquet_cases()
    csv_cases()
    other_cases()
    manifest = {
        "settings": CORPUS_SETTINGS,
        "cases": [asdict(case) for case in CASES],
    }
    (CORPUS / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in CORPUS.iterdir())
    print(f"wrote {len(CASES)} cases ({size / 1024:.0f} KiB) to {CORPUS}")


if __name__ == "__main__":
    main()
