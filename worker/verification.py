"""Jobs that verify their selection (`verify` in the job body; tov_engine.verify).

The validation file is split in the attempt's scratch folder: the selection runs on the kept
rows, then fresh adapters are fine-tuned on the selection and on same-size random subsets and
measured on the held-out rows, under stage `verify` with the attempt's cancellation. A
verification that fails after a valid selection does not fail the job: the selection is
published with the report's `error` set (a cancel or a lost lease still stops the attempt).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from app.core.models import JobStage
from tov_engine import Cancelled, EngineError, ProgressEvent, SelectionOutcome
from tov_engine.config import JobConfig, VerifySettings
from tov_engine.methods.common import TRAIN_COST
from tov_engine.verify import split_validation, verify_selection
from worker.attempt import AttemptContext
from worker.engine_bridge import JobInputs, job_folder
from worker.lease import LeaseLost

logger = logging.getLogger(__name__)

Runner = Callable[[AttemptContext, JobInputs], list[SelectionOutcome]]


def verify_share(
    config: JobConfig, settings: VerifySettings, pool_rows: int, val_rows: int
) -> float:
    """The share of the job's work (in forward-pass units, as the engine's trackers count) that
    verification takes: the job's progress and ETA run over both parts."""
    budget = config.selection.resolve_budget(pool_rows)
    held = max(1, round(settings.holdout * val_rows))
    verify = TRAIN_COST * settings.seeds * 2 * settings.epochs * budget
    verify += (2 * settings.seeds + 1) * held
    if config.method == "random":
        select = 0.0
    elif config.method == "tov":
        base = config.tov.resolve_base_size(budget, pool_rows)
        rounds = config.tov.resolve_rounds(base)
        select = rounds * (TRAIN_COST * (base + val_rows - held) + 2.0 * (pool_rows - base))
    else:  # one scoring pass over the pool (LESS and RDS also train a little)
        select = 2.0 * pool_rows
    return verify / (verify + select)


def run_verified(
    context: AttemptContext, inputs: JobInputs, runner: Runner
) -> tuple[list[SelectionOutcome], dict[str, Any]]:
    """Select on the kept validation rows with `runner`, then verify the selection.

    Returns the outcomes and the stored report (VerifyReport.to_dict(), or {"error": ...}).
    """
    settings = inputs.verify
    assert settings is not None and len(inputs.validation_paths) == 1  # the API checks both
    folder = job_folder(context.settings, context.job_id) / "verify"
    split = split_validation(
        inputs.validation_paths[0], folder, settings.holdout, inputs.config.seed
    )
    rows = len(split.kept_rows) + len(split.holdout_rows)
    share = verify_share(inputs.config, settings, inputs.pool_rows, rows)
    progress = context.progress
    progress.span = (0.0, 1.0 - share)
    kept = dataclasses.replace(inputs, validation_paths=[split.kept_path])
    outcomes = runner(context, kept)
    progress.span = (1.0 - share, 1.0)

    def on_event(event: ProgressEvent) -> None:
        progress.report(JobStage.VERIFY, event.fraction, None, event.message)

    on_event(ProgressEvent("verify", 0, 1, 0.0, "fine-tuning on the selection and random rows"))
    try:
        report = verify_selection(
            pool_path=inputs.pool_path,
            holdout_path=split.holdout_path,
            model=inputs.model,
            config=inputs.config,
            selected=outcomes[0].selection.indices,
            settings=settings,
            progress=on_event,
            should_cancel=context.should_stop,
        ).to_dict()
    except (Cancelled, LeaseLost, OperationalError, InterfaceError):  # the attempt ends
        raise
    except EngineError as exc:
        logger.warning("job %s: verification failed: %s", context.job_id, exc)
        report = {"error": f"verification failed: {exc}"[:2000]}
    except Exception as exc:  # the selection is valid: publish it, say why verifying failed
        logger.exception("job %s: verification crashed", context.job_id)
        report = {"error": f"verification failed: internal error ({type(exc).__name__})"}
    finally:
        progress.span = (0.0, 1.0)
    return outcomes, report
