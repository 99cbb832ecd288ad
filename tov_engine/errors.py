"""The engine's errors: one root, a few kinds, each with a message a user can act on."""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class DataError(EngineError):
    """A dataset row (or the file itself) is unusable.

    Args:
        file: the dataset path as given.
        row: 1-based row number (0 when the problem is the whole file).
        field: the offending field ("" when none applies).
        reason: what is wrong, in words.
    """

    def __init__(self, file: str, row: int, field: str, reason: str) -> None:
        self.file, self.row, self.field, self.reason = file, row, field, reason
        where = f"row {row}" if row > 0 else "file"
        what = f", field '{field}'" if field else ""
        super().__init__(f"{file}: {where}{what}: {reason}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, int, str, str]]:
        # Keep the error picklable (it crosses process boundaries in the worker).
        return (DataError, (self.file, self.row, self.field, self.reason))


class ModelError(EngineError):
    """The model or tokenizer cannot be loaded or does not fit the task."""


class ConfigError(EngineError):
    """The configuration does not fit the data (e.g. a budget larger than the pool)."""


class InsufficientMemory(EngineError):
    """The job's predicted peak memory exceeds what its device has (tov_plan.memory)."""


class CheckpointError(EngineError):
    """A checkpoint folder belongs to another job or is damaged."""


class Cancelled(EngineError):
    """The caller asked to stop (should_cancel returned True)."""
