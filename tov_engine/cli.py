"""Command line: `tov-select select --pool P --validation V --model M --budget B --out O`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tov_engine.config import JobConfig, LessSettings, LoraSettings, SelectionConfig, ToVConfig
from tov_engine.errors import Cancelled, EngineError
from tov_engine.job import SelectionOutcome
from tov_engine.output import WRITERS, score_rows, selection_rows, write_table
from tov_engine.progress import ProgressEvent
from tov_engine.run import run_selection

EXIT_ERROR, EXIT_CANCELLED = 2, 130
UNFIT_SHOWN = 20  # rows without a loss-bearing token the summary names (the stats list more)


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", required=True, type=Path, help="pool file (.jsonl/.parquet/.csv)")
    p.add_argument("--validation", required=True, type=Path, help="validation file (Z_val)")
    p.add_argument("--model", required=True, type=Path, help="local model folder (safetensors)")
    p.add_argument("--budget", required=True, type=float, help=">= 1: rows; in (0,1): fraction")
    p.add_argument("--out", required=True, type=Path, help="selection (.jsonl/.parquet/.csv)")
    p.add_argument("--scores-out", type=Path, help="also write every scored row here")
    p.add_argument("--checkpoint-dir", type=Path, help="per-round checkpoints; reruns resume")
    p.add_argument("--task", default="causal_lm", choices=["causal_lm", "token_classification"])
    p.add_argument("--method", default="tov", choices=["tov", "random", "uncertainty", "less"])
    p.add_argument("--strategy", default="score+random", choices=["score+random", "score-only"])
    p.add_argument("--num-bins", type=int, default=10, help="length bins (default 10)")
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one subcommand, `select`)."""
    parser = argparse.ArgumentParser(prog="tov-select", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    select = sub.add_parser("select", help="score a pool and select a subset")
    _add_job_options(select)
    _add_tov_options(select)
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


def _run_with_progress(a: argparse.Namespace, config: JobConfig) -> SelectionOutcome:
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

        return run_selection(
            pool_path=a.pool,
            validation_path=a.validation,
            model=a.model,
            config=config,
            progress=report,
            checkpoint_dir=a.checkpoint_dir,
        )


def _summary(outcome: SelectionOutcome) -> str:
    s, sel = outcome.stats, outcome.selection
    parts = [
        f"selected {len(sel.indices)} of {s['rows']} rows "
        f"({sel.sources.count('score')} by score, {sel.sources.count('random')} random)"
    ]
    keys = ("rounds", "base_size", "precision", "truncated_rows", "rows_without_loss_tokens")
    for key in (*keys, "padding_waste"):
        if key in s:
            parts.append(f"{key}={s[key]:.3g}" if isinstance(s[key], float) else f"{key}={s[key]}")
    seconds = sum(v for k, v in s.items() if k.startswith("seconds_"))
    parts.append(f"{seconds:.1f}s")
    unfit = s.get("unfit_rows") or []
    lines = [f"  row {u['index']}: {u['reason']}" for u in unfit[:UNFIT_SHOWN]]
    more = int(s.get("rows_without_loss_tokens", len(unfit))) - len(lines)
    if more > 0:
        lines.append(f"  ... and {more} more")
    head = "; ".join(parts)
    return (
        "\n".join([head, "rows never scored (no loss-bearing token):", *lines]) if lines else head
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tov-select` and `python -m tov_engine`. Returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        for out in (args.out, args.scores_out):
            if out is not None and out.suffix.lower() not in WRITERS:
                raise ValueError(f"output {out} must end in one of {WRITERS}")
        config = config_from_args(args)
        outcome = _run_with_progress(args, config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    write_table(args.out, selection_rows(outcome.selection), ["index", "score", "source"])
    if args.scores_out is not None:
        rows = score_rows(outcome.scores, outcome.lengths)
        write_table(args.scores_out, rows, ["index", "score", "length"])
    print(_summary(outcome))
    return 0
