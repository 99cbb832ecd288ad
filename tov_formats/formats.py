"""The four row formats: their names, the fields each requires, and how a row announces one.

- "chat": {"messages": [{"role", "content"}, ...]}, loss on assistant turns;
- "prompt_completion": {"prompt", "completion"}, loss on the completion;
- "text": {"text"}, loss on every token;
- "token_classification": {"tokens": [...], "tags": [...]}, string or integer tags.
Extra fields are allowed and ignored. A file's format is the one its first row announces.
"""

from __future__ import annotations

from collections.abc import Container

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
TEXT = "text"
TOKEN_CLASSIFICATION = "token_classification"
FORMATS = (CHAT, PROMPT_COMPLETION, TEXT, TOKEN_CLASSIFICATION)
ROLES = ("system", "user", "assistant", "tool")

# The fields a row of each format must hold, in the order they are checked.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    CHAT: ("messages",),
    PROMPT_COMPLETION: ("prompt", "completion"),
    TEXT: ("text",),
    TOKEN_CLASSIFICATION: ("tokens", "tags"),
}
# The order formats are tried in: a row holding `messages` is chat whatever else it holds.
_DETECTION_ORDER = (CHAT, PROMPT_COMPLETION, TOKEN_CLASSIFICATION, TEXT)


def detect_format(fields: Container[str]) -> str | None:
    """The format a row's keys (or a file's columns) announce, or None.

    A row holding every field of a format is of the first such format in the order chat,
    prompt_completion, token_classification, text (extra fields are ignored). A row holding only
    some fields of formats is of the first format it touches (`{"prompt": "a"}` is a
    prompt_completion row missing its completion), so a half-written row is reported against
    its format.
    """
    touched = [f for f in _DETECTION_ORDER if any(n in fields for n in REQUIRED_FIELDS[f])]
    complete = [f for f in touched if all(n in fields for n in REQUIRED_FIELDS[f])]
    chosen = complete or touched
    return chosen[0] if chosen else None
