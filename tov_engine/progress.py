"""Progress events and the tracker that turns stage units into one monotone overall fraction."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tov_engine.errors import Cancelled

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    stage: "train" | "score" | "select"; done/total: units within the stage (rows trained on or
    rows scored, over all rounds); fraction: overall fraction of the whole run, 0..1, monotone.
    """

    stage: str
    done: int
    total: int
    fraction: float
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


class Tracker:
    """Counts work units per stage and reports them, weighted into one overall fraction.

    Args:
        totals: units per stage, e.g. {"train": rows to train on, "score": rows to score}.
        weights: relative cost of one unit of each stage (a training row costs ~3 forward passes).
        progress: the caller's callback, or None.
        should_cancel: polled on every `advance`; True raises Cancelled.
    """

    def __init__(
        self,
        totals: dict[str, int],
        weights: dict[str, float],
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> None:
        self.totals = dict(totals)
        self.weights = weights
        self.done = {stage: 0 for stage in totals}
        self.progress = progress
        self.should_cancel = should_cancel
        self._last_fraction = 0.0

    def _fraction(self) -> float:
        cost = sum(self.totals[s] * self.weights.get(s, 1.0) for s in self.totals)
        if cost <= 0:
            return 0.0
        done = sum(self.done[s] * self.weights.get(s, 1.0) for s in self.totals)
        return min(1.0, done / cost)

    def check_cancel(self) -> None:
        """Raise Cancelled when the caller asked to stop."""
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("cancelled by the caller")

    def advance(self, stage: str, units: int, message: str = "") -> None:
        """Record `units` more done in `stage`, report, and poll cancellation."""
        self.done[stage] = min(self.totals[stage], self.done[stage] + units)
        self.emit(stage, message)
        self.check_cancel()

    def finish(self, stage: str, message: str = "") -> None:
        """Mark a stage complete (e.g. after resuming rounds from a checkpoint)."""
        self.done[stage] = self.totals[stage]
        self.emit(stage, message)

    def emit(self, stage: str, message: str = "") -> None:
        """Send the current state of `stage` to the callback (fraction never goes down)."""
        self._last_fraction = max(self._last_fraction, self._fraction())
        if self.progress is None:
            return
        event = ProgressEvent(
            stage=stage,
            done=self.done[stage],
            total=self.totals[stage],
            fraction=self._last_fraction,
            message=message,
        )
        self.progress(event)


def scaled(progress: ProgressCallback, j: int, k: int) -> ProgressCallback:
    """Target j's own progress as its share of the whole run (fractions stay monotone)."""

    def report(event: ProgressEvent) -> None:
        progress(dataclasses.replace(event, fraction=(j + event.fraction) / k))

    return report
