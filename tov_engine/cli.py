"""Command line: `tov-select select --pool P --validation V --model M --budget B --out O`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tov_engine.config import (
    STRATEGIES,
    JobConfig,
    LessSettings,
    LoraSettings,
    SelectionConfig,
    ToVConfig,
    VerifySettings,
)
from tov_engine.errors import Cancelled, EngineError, InsufficientMemory
from tov_engine.job import SelectionOutcome
from tov_engine.leakage import MODES, LeakageConfig
from tov_engine.output import (
    SCORE_COLUMNS,
    SELECTION_COLUMNS,
    WRITERS,
    score_rows,
    selection_rows,
    write_table,
)
from tov_engine.progress import ProgressEvent
from tov_engine.run import run_selection
from tov_engine.verify import VerifyReport, split_validation, verify_selection
from tov_plan.rules import DEFAULT_NUM_BINS, DEFAULT_STRATEGY

EXIT_ERROR, EXIT_CANCELLED = 2, 130
EXIT_MEMORY = 3  # the job needs more memory than its device has (tov_plan.memory)
UNFIT_SHOWN = 20  # rows without a loss-bearing token the summary names (the stats list more)


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", required=True, type=Path, help="pool file (.jsonl/.parquet/.csv)")
    p.add_argument("--validation", required=True, type=Path, help="validation file (Z_val)")
    p.add_argument("--model", required=True, type=Path, help="local model folder (safetensors)")
    p.add_argument("--budget", required=True, type=float, help=">= 1: rows; in (0,1): fraction")
    p.add_argument("--out", type=Path, help="selection (.jsonl/.parquet/.csv); required")
    p.add_argument("--scores-out", type=Path, help="also write every scored row here")
    p.add_argument("--checkpoint-dir", type=Path, help="per-round checkpoints; reruns resume")
    p.add_argument("--task", default="causal_lm", choices=["causal_lm", "token_classification"])
    p.add_argument(
        "--method", default="tov", choices=["tov", "random", "uncertainty", "less", "rds"]
    )
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=list(STRATEGIES))
    p.add_argument(
        "--num-bins",
        type=int,
        default=DEFAULT_NUM_BINS,
        help=f"length bins (default {DEFAULT_NUM_BINS}, the paper's; 1 for short-answer targets)",
    )
    p.add_argument(
        "--min-per-bin",
        type=int,
        default=0,
        help="fewer bins when the score picks are few, so each gets this many (default 0: off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=512, help="tokens per row (default 512)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="precision policy: bfloat16 frozen base weights (LoRA, head and score differences "
        "stay float32) or all float32 (default auto: bfloat16 on a bf16 GPU, else float32)",
    )
    p.add_argument(
        "--nondeterministic",
        action="store_true",
        help="allow nondeterministic GPU kernels (faster; results may differ between runs)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        default="auto",
        choices=["auto", "on", "off"],
        help="recompute activations in the backward instead of keeping them (less training "
        "memory, ~30%% more training time; default auto: on with CUDA, off on CPU)",
    )


def _add_tov_options(p: argparse.ArgumentParser) -> None:
    d = ToVConfig()
    p.add_argument("--base-size", type=int, help="|U| (default: half the budget)")
    p.add_argument("--rounds", type=int, help="L (default: 16384 // |U|, capped at 8)")
    p.add_argument("--variant", default=d.variant, choices=["A", "B"])
    p.add_argument("--val-lr-factor", type=float, default=d.val_lr_factor, help="epsilon")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--score-fn", default=d.score_fn, choices=["improvement", "absolute", "positive"]
    )
    p.add_argument("--tokens-per-batch", type=int, default=d.tokens_per_batch)
    p.add_argument(
        "--train-tokens-per-micro-batch",
        type=int,
        default=d.train_tokens_per_micro_batch,
        help="padded tokens per training micro-batch: larger batches accumulate gradients over "
        f"several (same update, less memory; default {d.train_tokens_per_micro_batch})",
    )
    p.add_argument(
        "--token-score",
        default=d.token_score,
        choices=["class_balanced", "mean"],
        help="token classification: how a row's token scores reduce (default class_balanced)",
    )
    p.add_argument("--full-finetune", action="store_true", help="no LoRA: train all weights")
    p.add_argument("--lora-rank", type=int, default=d.lora.rank)
    p.add_argument("--lora-alpha", type=int, default=d.lora.alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora.dropout)
    p.add_argument("--lora-target-modules", default="all-linear", help="'all-linear' or a,b,c")
    e = LessSettings()
    p.add_argument("--less-warmup-fraction", type=float, default=e.warmup_fraction)
    p.add_argument("--less-epochs", type=int, default=e.epochs)
    p.add_argument("--less-projection-dim", type=int, default=e.projection_dim)


def _add_leakage_options(p: argparse.ArgumentParser) -> None:
    d = LeakageConfig()
    p.add_argument(
        "--decontaminate-against",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a file (e.g. your test set) whose rows must not be selected, exact or near "
        "duplicates included (repeatable)",
    )
    p.add_argument("--leaks-out", type=Path, help="write the leakage check's findings (JSONL)")
    p.add_argument(
        "--leakage-validation",
        default=d.validation,
        choices=list(MODES),
        help="pool rows repeating a validation row: listed (report) or never selected "
        f"(exclude; default {d.validation})",
    )
    p.add_argument(
        "--leakage-decontaminate",
        default=d.decontaminate,
        choices=list(MODES),
        help=f"pool rows repeating a --decontaminate-against row (default {d.decontaminate})",
    )
    p.add_argument(
        "--leakage-threshold",
        type=float,
        default=d.threshold,
        help=f"least Jaccard similarity of word {d.ngram}-grams of a near duplicate "
        f"(default {d.threshold})",
    )


def _add_verify_options(p: argparse.ArgumentParser) -> None:
    d = VerifySettings()
    p.add_argument(
        "--verify-holdout",
        type=float,
        metavar="F",
        help="verify the selection: hold this share of the validation rows out of selection "
        "(e.g. 0.25), then fine-tune fresh adapters on the selection and on same-size random "
        "subsets and compare their loss on the held-out rows (default: no verification)",
    )
    p.add_argument(
        "--verify-seeds",
        type=int,
        default=d.seeds,
        help=f"with --verify-holdout: fine-tuning seeds per arm (default {d.seeds})",
    )
    p.add_argument(
        "--verify-out", type=Path, help="with --verify-holdout: write the report here (JSON)"
    )


def verify_from_args(a: argparse.Namespace) -> VerifySettings | None:
    """The VerifySettings the parsed options describe, or None without --verify-holdout."""
    if a.verify_holdout is None:
        if a.verify_out is not None:
            raise ValueError("--verify-out needs --verify-holdout")
        return None
    return VerifySettings(holdout=a.verify_holdout, seeds=a.verify_seeds)


@dataclass
class CliResult:
    """What one `select` run produced: the selection, and the verification when asked for."""

    outcome: SelectionOutcome
    verify: VerifyReport | None = None


def verify_summary(report: VerifyReport, kept_rows: int | None = None) -> str:
    """One line: the held-out losses and the improvement over random (kept_rows: the validation
    rows selection saw)."""
    kept = "" if kept_rows is None else f"selection saw the other {kept_rows}, "
    return (
        f"verify ({report.holdout_rows} held-out rows, {kept}{report.seeds} seeds, "
        f"{report.seconds:.1f}s): base loss {report.base_loss:.4f}, "
        f"selected {report.selected_loss:.4f}, random {report.random_loss:.4f}; "
        f"improvement over random {report.improvement:+.4f} ± {report.improvement_sd:.4f} "
        f"({report.improvement_percent:+.2f}%)"
    )


def leakage_from_args(a: argparse.Namespace) -> LeakageConfig:
    """The LeakageConfig the parsed options describe (ConfigError on a bad value)."""
    return LeakageConfig(
        validation=a.leakage_validation,
        decontaminate=a.leakage_decontaminate,
        threshold=a.leakage_threshold,
    )


def write_leaks(path: Path, outcome: SelectionOutcome) -> None:
    """The outcome's leaks, one JSON object a line (tov_engine.leakage.Leak's fields)."""
    with path.open("w", encoding="utf-8") as out:
        for leak in outcome.leaks:
            out.write(json.dumps(leak.as_dict(), ensure_ascii=False) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one subcommand, `select`)."""
    parser = argparse.ArgumentParser(prog="tov-select", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    select = sub.add_parser("select", help="score a pool and select a subset")
    _add_job_options(select)
    select.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="run even when the memory model predicts the job will not fit its device",
    )
    select.add_argument(
        "--dry-run",
        action="store_true",
        help="load no weights and select nothing: print the estimate as JSON (rows, tokens, "
        "passes, predicted wall time and peak memory on --device-class, whether it fits)",
    )
    select.add_argument(
        "--device-class",
        default="cpu",
        choices=["cpu", "h100", "a100", "l4"],
        help="with --dry-run: the device to predict for (default cpu)",
    )
    _add_tov_options(select)
    _add_leakage_options(select)
    _add_verify_options(select)
    return parser


def config_from_args(a: argparse.Namespace) -> JobConfig:
    """The JobConfig the parsed options describe (ValueError on a bad value)."""
    targets = a.lora_target_modules
    lora = LoraSettings(
        enabled=not a.full_finetune,
        rank=a.lora_rank,
        alpha=a.lora_alpha,
        dropout=a.lora_dropout,
        target_modules=targets if targets == "all-linear" else tuple(targets.split(",")),
    )
    budget = int(a.budget) if a.budget >= 1 and float(a.budget).is_integer() else a.budget
    return JobConfig(
        task=a.task,
        method=a.method,
        seed=a.seed,
        max_length=a.max_length,
        device=a.device,
        precision=a.dtype,
        deterministic=not a.nondeterministic,
        gradient_checkpointing=a.gradient_checkpointing,
        tov=ToVConfig(
            base_size=a.base_size,
            rounds=a.rounds,
            variant=a.variant,
            val_lr_factor=a.val_lr_factor,
            learning_rate=a.learning_rate,
            batch_size=a.batch_size,
            score_fn=a.score_fn,
            lora=lora,
            tokens_per_batch=a.tokens_per_batch,
            train_tokens_per_micro_batch=a.train_tokens_per_micro_batch,
            token_score=a.token_score,
        ),
        selection=SelectionConfig(
            budget=budget, strategy=a.strategy, num_bins=a.num_bins, min_per_bin=a.min_per_bin
        ),
        less=LessSettings(
            warmup_fraction=a.less_warmup_fraction,
            epochs=a.less_epochs,
            projection_dim=a.less_projection_dim,
        ),
    )


def _run_with_progress(
    a: argparse.Namespace, config: JobConfig, verify: VerifySettings | None = None
) -> CliResult:
    """Run the selection (on the kept validation rows when verifying), then the verification."""
    if verify is None:
        return CliResult(_select_with_progress(a, config, a.validation))
    with tempfile.TemporaryDirectory(prefix="tov-verify-") as folder:
        split = split_validation(a.validation, folder, verify.holdout, config.seed)
        outcome = _select_with_progress(a, config, split.kept_path)
        with _progress_bar() as report:
            verified = verify_selection(
                pool_path=a.pool,
                holdout_path=split.holdout_path,
                model=a.model,
                config=config,
                selected=outcome.selection.indices,
                settings=verify,
                progress=report,
            )
    return CliResult(outcome, verified)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[ProgressEvent], None]]:
    """A rich progress bar showing each stage; yields the progress callback."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("start", total=1.0, info="")

        def report(event: ProgressEvent) -> None:
            info = f"{event.done}/{event.total} {event.message}".strip()
            bar.update(task, completed=event.fraction, description=event.stage, info=info)

        yield report


def _select_with_progress(
    a: argparse.Namespace, config: JobConfig, validation: Path
) -> SelectionOutcome:
    with _progress_bar() as report:
        return run_selection(
            pool_path=a.pool,
            validation_path=validation,
            model=a.model,
            config=config,
            progress=report,
            checkpoint_dir=a.checkpoint_dir,
            decontaminate_against=a.decontaminate_against,
            leakage=leakage_from_args(a),
        )


def _summary(outcome: SelectionOutcome) -> str:
    s, sel = outcome.stats, outcome.selection
    parts = [
        f"selected {len(sel.indices)} of {s['rows']} rows "
        f"({sel.sources.count('score')} by score, {sel.sources.count('random')} random)"
    ]
    keys = (
        "rounds",
        "base_size",
        "precision",
        "gradient_checkpointing",
        "train_micro_batches",
        "truncated_rows",
        "rows_without_loss_tokens",
    )
    for key in (*keys, "padding_waste"):
        if key in s:
            parts.append(f"{key}={s[key]:.3g}" if isinstance(s[key], float) else f"{key}={s[key]}")
    seconds = sum(v for k, v in s.items() if k.startswith("seconds_"))
    parts.append(f"{seconds:.1f}s")
    leaks = s.get("leaks")
    if leaks:
        parts.append(
            f"leaks: {leaks['rows']} pool rows ({leaks['validation']} of validation, "
            f"{leaks['decontaminate']} of decontamination files; {leaks['excluded']} excluded)"
        )
    unfit = s.get("unfit_rows") or []
    lines = [f"  row {u['index']}: {u['reason']}" for u in unfit[:UNFIT_SHOWN]]
    more = int(s.get("rows_without_loss_tokens", len(unfit))) - len(lines)
    if more > 0:
        lines.append(f"  ... and {more} more")
    head = "; ".join(parts)
    return (
        "\n".join([head, "rows never scored (no loss-bearing token):", *lines]) if lines else head
    )


def _check_memory(config: JobConfig, model: Path, pool: Path, validation: Path) -> None:
    """Refuse a job its device cannot hold before anything loads (InsufficientMemory)."""
    from tov_engine.model.footprint import check_memory  # lazy: imports torch

    if not (model / "config.json").is_file():
        return  # loading the model says what is wrong
    try:
        check_memory(config, model, pool=pool, validation=[validation])
    except ValueError as exc:  # an architecture the memory model cannot read: not checked
        logging.getLogger(__name__).warning("memory check skipped: %s", exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tov-select` and `python -m tov_engine`. Returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.dry_run:
            from tov_engine.dry_run import estimate  # loads no weights, imports no torch

            config = config_from_args(args)
            print(
                json.dumps(
                    estimate(
                        config,
                        pool=args.pool,
                        validation=args.validation,
                        model=args.model,
                        device_class=args.device_class,
                    ),
                    indent=2,
                )
            )
            return 0
        if args.out is None:
            raise ValueError("--out is required (the selection's file), unless --dry-run")
        for out in (args.out, args.scores_out):
            if out is not None and out.suffix.lower() not in WRITERS:
                raise ValueError(f"output {out} must end in one of {WRITERS}")
        config = config_from_args(args)
        verify = verify_from_args(args)
        if not args.skip_memory_check and config.method != "random":
            _check_memory(config, args.model, args.pool, args.validation)
        result = _run_with_progress(args, config, verify)
        outcome = result.outcome
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except InsufficientMemory as exc:
        print(f"error: {exc} (--skip-memory-check runs it anyway)", file=sys.stderr)
        return EXIT_MEMORY
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    write_table(args.out, selection_rows(outcome.selection), SELECTION_COLUMNS)
    if args.scores_out is not None:
        o = outcome
        rows = score_rows(o.scores, o.lengths, o.loss_before, o.loss_after, o.binning)
        write_table(args.scores_out, rows, SCORE_COLUMNS)
    if args.leaks_out is not None:
        write_leaks(args.leaks_out, outcome)
    print(_summary(outcome))
    if result.verify is not None:
        print(verify_summary(result.verify, outcome.stats.get("validation_rows")))
        if args.verify_out is not None:
            args.verify_out.write_text(json.dumps(result.verify.to_dict(), indent=2) + "\n")
    return 0
