"""A row's whole text, per format: what the leakage check compares (standard library only).

chat: every message's content, in order; prompt_completion: the prompt, then the completion;
text: the text; token_classification: the tokens joined by spaces. Tags, roles and extra columns
are not text. A row's format is the one its keys announce (`detect_format`).
"""

from __future__ import annotations

from typing import Any

from tov_formats.formats import CHAT, PROMPT_COMPLETION, TEXT, TOKEN_CLASSIFICATION, detect_format


def row_text(row: dict[str, Any], fmt: str | None = None) -> str:
    """The text of a valid row of format `fmt` (detected from its keys when None).

    Raises ValueError for a row that announces no format.
    """
    fmt = fmt or detect_format(row)
    if fmt == CHAT:
        return "\n".join(str(m.get("content", "")) for m in row["messages"])
    if fmt == PROMPT_COMPLETION:
        return f"{row['prompt']}\n{row['completion']}"
    if fmt == TOKEN_CLASSIFICATION:
        return " ".join(str(t) for t in row["tokens"])
    if fmt == TEXT:
        return str(row["text"])
    raise ValueError(f"the row announces no format (keys: {sorted(row)[:10]})")
