"""The row formats of a dataset, written once: names, detection and per-row rules.

Standard library only: the API validates uploads with it without importing the ML stack, and
the engine reads files with it, so the two cannot drift apart.
"""

from tov_formats.formats import (
    CHAT,
    FORMATS,
    PROMPT_COMPLETION,
    REQUIRED_FIELDS,
    ROLES,
    TEXT,
    TOKEN_CLASSIFICATION,
    detect_format,
)
from tov_formats.rules import NO_LIMITS, Problem, RowLimits, Rule, kind_of, row_problems
from tov_formats.text import row_text

__all__ = [
    "CHAT",
    "FORMATS",
    "NO_LIMITS",
    "PROMPT_COMPLETION",
    "REQUIRED_FIELDS",
    "ROLES",
    "TEXT",
    "TOKEN_CLASSIFICATION",
    "Problem",
    "RowLimits",
    "Rule",
    "detect_format",
    "kind_of",
    "row_problems",
    "row_text",
]
