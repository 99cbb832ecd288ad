"""The kinds of work the benchmark runs, each in a child process of its own.

- `selection_job`: one engine selection (`tov_engine.run_selection`), timed, with the child's peak
  RSS (ru_maxrss) and the bytes it wrote (the engine's checkpoint folder plus the outputs).
- `embed_job`: the pool's embeddings from the frozen base model (the engine's
  `tov_engine.methods.embedding.pool_embeddings`, as RDS+ and score+diverse compute them), once
  per setting: they do not depend on the seed. A ToV selection run derives its score+diverse
  variant from its scores and these embeddings, as it derives score-only and score+random.
- `finetune_job`: fine-tune the base model on a selected subset with the fixed recipe, then measure
  the target test log-loss: the mean NLL over every loss-bearing token of the test rows (causal LM:
  the completion and its eos; token classification: the first sub-word of every word); for test
  rows with a `subtask` field (multi-target settings) also the loss of each subtask.

Both write their result as JSON to `out_path`; the parent reads it after the child exits.
"""

from __future__ import annotations

import json
import numbers
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality.plan import ONE_BIN

# Fine-tuning recipe (fixed for every method; only the learning rate is swept, on random).
RECIPE: dict[str, dict[str, Any]] = {
    "causal_lm": {
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": "all-linear",
        "epochs": 3,
        "batch_size": 4,
    },
    "token_classification": {"full_finetune": True, "epochs": 6, "batch_size": 8},
}


def _threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def _cpu_seconds() -> float:
    """CPU time (user + system) this child process has used so far: on shared cores a steadier
    measure of a job's cost than its wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def min_per_bin(spec: dict[str, Any]) -> int:
    """The engine's selection rule `min_per_bin` (tov_engine.selection.bins_for): with k score
    picks use at most k // min_per_bin of the paper's 10 length bins. 0 = always 10 bins.

    With k < 10 score picks 10 bins leave each bin at most one pick, which forces length
    diversity and discards the score whenever the target's rows share a length range."""
    return int(spec["engine"].get("min_per_bin", 0))


def _write_result(out_path: str, result: dict[str, Any]) -> None:
    """Write a job's result JSON atomically (a sibling file renamed into place): the parent
    accepts a result file only when it is whole."""
    out = Path(out_path)
    part = out.with_name(out.name + ".writing")
    part.write_text(json.dumps(result) + "\n")
    os.replace(part, out)


def _plain(value: Any) -> Any:
    """A stat as JSON: numbers as floats; text and lists (the unfit rows) as they are."""
    return float(value) if isinstance(value, numbers.Real) else value


def selection_job(spec: dict[str, Any], out_path: str) -> None:
    """Run one selection. spec: data folder, model folder, method, seed, engine settings, variants.

    Writes {"selections": {name: [indices]}, "seconds", "peak_rss_mb", "start_rss_mb", "disk_mb",
    "stats"} and, for score-based methods, scores.npz next to out_path.
    """
    _threads()
    from tov_engine import (
        JobConfig,
        LessSettings,
        LoraSettings,
        SelectionConfig,
        ToVConfig,
        run_selection,
        select,
    )
    from tov_engine.selection import EMBEDDING_STRATEGIES, bins_for

    start_rss = _rss_mb()
    data = Path(spec["data"])
    work = Path(out_path).parent / (Path(out_path).stem + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    e = spec["engine"]
    lora = LoraSettings(rank=e["lora_rank"], target_modules=tuple(e["lora_target_modules"]))
    tov = ToVConfig(
        rounds=e["rounds"],
        base_size=e.get("base_size"),
        learning_rate=e["learning_rate"],
        val_lr_factor=e["val_lr_factor"],
        batch_size=e["batch_size"],
        score_fn=e["score_fn"],
        variant=spec.get("variant", "A"),
        lora=lora,
        # token classification's row reduction (tov.token_score; the engine default if unset)
        token_score=e.get("tagged_reduction", ToVConfig().token_score),
    )
    config = JobConfig(
        task=spec["task"],
        method=spec["method"],
        tov=tov,
        selection=SelectionConfig(
            budget=spec["budget"],
            strategy="score+random",
            num_bins=bins_for(spec["budget"] - spec["budget"] // 2, 10, min_per_bin(spec)),
        ),
        seed=spec["seed"],
        max_length=e["max_length"],
        device="cpu",
        less=LessSettings(projection_dim=e["less_projection_dim"], epochs=e.get("less_epochs", 4)),
    )
    t0 = time.perf_counter()
    outcome = run_selection(
        pool_path=data / "pool.jsonl",
        validation_path=data / "validation.jsonl",
        model=spec["model"],
        config=config,
        checkpoint_dir=work / "ckpt" if spec["method"] == "tov" else None,
    )
    # What a service stores: the selection and the scores.
    np.savez(
        work / "outcome.npz",
        indices=outcome.selection.indices,
        scores=outcome.scores,
        lengths=outcome.lengths,
    )
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    disk = _du(work) / 2**20
    selections = {}
    embeddings = None
    for name, strategy in spec.get("strategies", {"main": None}).items():
        if strategy is None:
            selections[name] = outcome.selection.indices.tolist()
            continue
        if strategy in EMBEDDING_STRATEGIES and embeddings is None:
            # the pool's frozen-model embeddings (embed_job, one per setting: seed-independent)
            embeddings = np.load(spec["embeddings"])["embeddings"]
        # The benchmark's rule (min_per_bin), and the paper's 10 bins for comparison (same scores);
        # a strategy named with ONE_BIN: one length bin only.
        strategy, one_bin, _ = strategy.partition(ONE_BIN)
        rules = [("", 1, 0)] if one_bin else [("", 10, min_per_bin(spec)), ("@10bins", 10, 0)]
        for suffix, bins, per_bin in rules:
            alt = select(
                scores=outcome.scores,
                lengths=outcome.lengths,
                base_indices=outcome.base_indices,
                config=SelectionConfig(budget=spec["budget"], strategy=strategy, num_bins=bins),
                seed=spec["seed"],
                min_per_bin=per_bin,
                embeddings=embeddings if strategy in EMBEDDING_STRATEGIES else None,
            )
            selections[name + suffix] = alt.indices.tolist()
    np.savez(
        Path(out_path).with_suffix(".npz"),
        scores=outcome.scores,
        lengths=outcome.lengths,
        base=outcome.base_indices,
    )
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "selections": selections,
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds(),
        "peak_rss_mb": peak,
        "start_rss_mb": start_rss,
        "disk_mb": disk,
        "stats": {k: _plain(v) for k, v in outcome.stats.items()},
    }
    _write_result(out_path, result)


def embed_job(spec: dict[str, Any], out_path: str) -> None:
    """The pool's embeddings (N, H) from the frozen base model, with the engine's own functions.

    spec: data folder, task, model folder, engine settings (max_length). Writes the vectors to
    <out_path>.npz (key "embeddings") and {"seconds", "cpu_seconds", "peak_rss_mb",
    "start_rss_mb", "rows", "dim"} to out_path. The cost is reported with the score+diverse
    variant that uses them."""
    _threads()
    from tov_engine import JobConfig
    from tov_engine.job import prepare_job
    from tov_engine.methods.embedding import load_frozen, pool_embeddings

    start_rss = _rss_mb()
    data = Path(spec["data"])
    t0 = time.perf_counter()
    job = prepare_job(
        pool_path=data / "pool.jsonl",
        validation_path=data / "validation.jsonl",
        model=spec["model"],
        config=JobConfig(
            task=spec["task"],
            method="rds",
            seed=0,
            max_length=spec["engine"]["max_length"],
            device="cpu",
        ),
    )
    vectors = pool_embeddings(job, load_frozen(job))  # no pool cache: always computed here
    seconds = time.perf_counter() - t0
    np.savez(Path(out_path).with_suffix(".npz"), embeddings=vectors)
    result = {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds(),
        "peak_rss_mb": _rss_mb(),
        "start_rss_mb": start_rss,
        "rows": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
    }
    _write_result(out_path, result)


# --------------------------------------------------------------------------- fine-tuning
def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _encode(task: str, tokenizer: Any, rows: list[dict], labels: list[str] | None):
    from tov_engine.data.encoding import encode_rows

    label_ids = {t: i for i, t in enumerate(labels)} if labels else None
    return encode_rows(tokenizer, rows, max_length=128, label_ids=label_ids)


def test_loss(model: Any, encoded: Any, task: str, pad_id: int) -> float:
    """Mean NLL over all loss-bearing tokens of `encoded` (token-weighted)."""
    return test_losses(model, encoded, task, pad_id)[0]


def test_losses(
    model: Any, encoded: Any, task: str, pad_id: int, groups: list[str] | None = None
) -> tuple[float, dict[str, float]]:
    """Mean NLL over all loss-bearing tokens of `encoded` (token-weighted), and, when `groups`
    names each row's group (a multi-target test set's subtasks), the same mean per group."""
    import torch

    from tov_engine.data.batching import make_batch, plan_buckets
    from tov_engine.model.logprob import token_logprobs

    model.eval()
    total, count = 0.0, 0
    group_nll: dict[str, float] = {}
    group_tokens: dict[str, int] = {}
    rows = np.arange(len(encoded))
    with torch.inference_mode():
        for batch_rows in plan_buckets(encoded.seq_lengths, rows, 2048):
            batch = make_batch(encoded, batch_rows, pad_id, torch.device("cpu"))
            lp = token_logprobs(model, batch, task)
            total += float(-lp.values.sum())
            count += int(lp.values.numel())
            if groups is not None:
                nll = -lp.values.double().cpu().numpy()
                where = np.asarray(batch.rows)[lp.row.cpu().numpy()]
                for g in {groups[int(r)] for r in batch.rows}:
                    in_g = np.array([groups[int(r)] == g for r in where], dtype=bool)
                    group_nll[g] = group_nll.get(g, 0.0) + float(nll[in_g].sum())
                    group_tokens[g] = group_tokens.get(g, 0) + int(in_g.sum())
    by_group = {g: group_nll[g] / max(group_tokens[g], 1) for g in sorted(group_nll)}
    return total / max(count, 1), by_group


def _load(task: str, model_dir: str, labels: list[str] | None, seed: int):
    import torch

    from tov_engine.model.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    torch.manual_seed(seed)  # a new token-classification head is random
    model = load_model(model_dir, task=task, device=torch.device("cpu"), labels=labels)
    return tokenizer, model


def finetune_job(spec: dict[str, Any], out_path: str) -> None:
    """Fine-tune on spec["indices"] of the pool (empty: no fine-tuning) and measure test loss."""
    _threads()
    import torch

    from tov_engine.model.training import EpochPlan, train_epoch

    data = Path(spec["data"])
    task = spec["task"]
    labels = spec.get("labels")
    seed = int(spec["seed"])
    t0 = time.perf_counter()
    tokenizer, model = _load(task, spec["model"], labels, seed)
    pad_id = int(tokenizer.pad_token_id)
    test_rows = _read(data / "test.jsonl")
    test = _encode(task, tokenizer, test_rows, labels)
    groups = [r["subtask"] for r in test_rows] if any("subtask" in r for r in test_rows) else None
    recipe = RECIPE[task]
    train_loss = float("nan")
    indices = np.asarray(spec["indices"], dtype=np.int64)
    if len(indices):
        pool_rows = _read(data / "pool.jsonl")
        train = _encode(task, tokenizer, [pool_rows[i] for i in indices], labels)
        if task == "causal_lm":
            from peft import LoraConfig, get_peft_model

            torch.manual_seed(seed)
            model = get_peft_model(
                model,
                LoraConfig(
                    r=recipe["lora_rank"],
                    lora_alpha=recipe["lora_alpha"],
                    lora_dropout=recipe["lora_dropout"],
                    target_modules=recipe["target_modules"],
                    task_type="CAUSAL_LM",
                ),
            )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(spec["lr"]), weight_decay=0.0)
        rows = np.arange(len(train), dtype=np.int64)
        for epoch in range(recipe["epochs"]):
            plan = EpochPlan(train, rows, recipe["batch_size"], (seed, epoch, 7), task, pad_id)
            train_loss = train_epoch(model, optimizer, plan)
    loss, by_subtask = test_losses(model, test, task, pad_id, groups)
    # The validation rows' loss: the only signal a defaults sweep may look at (never test rows).
    validation = _encode(task, tokenizer, _read(data / "validation.jsonl"), labels)
    validation_loss, _ = test_losses(model, validation, task, pad_id, None)
    result: dict[str, Any] = {
        "test_loss": loss,
        "validation_loss": validation_loss,
        "train_loss": train_loss,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": _cpu_seconds(),
        "rows": len(indices),
    }
    if by_subtask:
        result["test_loss_by_subtask"] = by_subtask
    _write_result(out_path, result)
