"""Select training data with ToV Select, fine-tune on it, and measure the loss on the target task.

    python examples/select_and_finetune.py                      # starts an embedded service
    python examples/select_and_finetune.py --api-url http://127.0.0.1:8000 --api-key tov_...

1. uploads the pool (`demo/data/pool.jsonl`) and the target task's few examples
   (`demo/data/validation.jsonl`) with the Python client, starts a ToV job and follows it;
2. downloads the selected rows (`/subset`), fine-tunes the model on them with plain transformers,
   and does the same on a random subset of the same size (the baseline);
3. reports the loss on held-out target examples (`demo/data/test.jsonl`) before and after.

Runs offline: the model is the local folder `.cache/models/smollm2-135m-instruct`
(`python scripts/prepare_model.py smollm2-135m-instruct` makes it). Without `--api-url` (or
TOV_API_URL) it starts the embedded service (SQLite, a local worker) under `.tov/example` and stops
it at the end. Needs the engine and client extras: `pip install -e ".[engine,client]"`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tov_client import Client
from tov_client.progress import job_progress

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "demo" / "data"
MODELS = REPO / ".cache" / "models"
MODEL = "smollm2-135m-instruct"
STATE = REPO / ".tov" / "example"
console = Console()


# -- the service ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_service() -> Iterator[tuple[str, str]]:
    """The whole service on this machine (SQLite, broker-less Celery, one worker); yields
    (url, api key) and stops it afterwards."""
    STATE.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "TOV_DATABASE_URL": f"sqlite:///{STATE}/tov.db",
        "TOV_BROKER_URL": f"sqla+sqlite:///{STATE}/broker.db",
        "TOV_ARTIFACT_ROOT": str(STATE / "artifacts"),
        "TOV_SHARED_DATA_ROOTS": json.dumps([str(DATA)]),
        "TOV_MODEL_ROOTS": json.dumps([str(MODELS)]),
        "HF_HUB_OFFLINE": "1",
    }
    run = {"env": env, "check": True, "capture_output": True, "text": True, "cwd": REPO}
    subprocess.run([sys.executable, "-m", "app.admin", "migrate"], **run)  # type: ignore[call-overload]
    key = subprocess.run(  # type: ignore[call-overload]
        [sys.executable, "-m", "app.admin", "keys", "create", "--tenant", "example"], **run
    ).stdout.strip()
    log = (STATE / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "app.launcher", "--skip-migrate", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    console.print(f"embedded service on {url} (log: {STATE / 'service.log'})")
    try:
        with Client(url, key) as probe:
            deadline = time.monotonic() + 120
            while True:
                if service.poll() is not None:
                    raise SystemExit(f"the service exited; see {STATE / 'service.log'}")
                try:
                    probe.list_jobs(limit=1)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        yield url, key
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)


# -- selection with the client -------------------------------------------------------------------


def select(client: Client, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Upload, run the ToV job, follow it, and return the selected rows and the job id."""
    pool = client.upload_dataset(args.pool)
    validation = client.upload_dataset(args.validation)
    console.print(
        f"pool {pool.id}: {pool.rows} rows; validation {validation.id}: {validation.rows} rows"
    )
    job = client.create_job(
        pool,
        validation,
        model=args.model,
        budget=args.budget,
        seed=args.seed,
        tov={"rounds": 2, "learning_rate": 1e-3, "batch_size": 8},
        max_length=args.max_length,
        metadata={"example": "select_and_finetune"},
    )
    console.print(f"job {job.id} accepted")
    with job_progress(console) as show:
        job = client.wait(job.id, on_progress=show)
    subset = STATE / f"{job.id}-subset.jsonl"
    client.download(job.id, "subset", dest=subset)
    rows = [json.loads(line) for line in subset.read_text().splitlines() if line.strip()]
    console.print(f"selected {len(rows)} rows -> {subset}")
    return rows, job.id


# -- fine-tuning with transformers ---------------------------------------------------------------


def encode(tokenizer: Any, row: dict[str, Any], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels; the loss is on the answer only (-100 elsewhere), as in ToV."""
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row:
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    else:
        ids = tokenizer(row["text"])["input_ids"][:max_length]
        return ids, list(ids)
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=False
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [-100] * min(len(prompt_ids), len(ids)) + ids[len(prompt_ids) :]
    return ids, labels


def batches(
    tokenizer: Any, rows: list[dict[str, Any]], size: int, max_length: int
) -> Iterator[dict[str, Any]]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(rows), size):
        pairs = [encode(tokenizer, r, max_length) for r in rows[start : start + size]]
        width = max(len(ids) for ids, _ in pairs)
        yield {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in pairs]),
            "attention_mask": torch.tensor(
                [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in pairs]
            ),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in pairs]),
        }


def target_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> float:
    """Mean loss per answer token over the target rows."""
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches(tokenizer, rows, 16, max_length):
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            tokens += int((labels != -100).sum())
    return total / max(1, tokens)


def load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32
    )
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def finetune(
    model_dir: Path,
    rows: list[dict[str, Any]],
    test: list[dict[str, Any]],
    args: argparse.Namespace,
    label: str,
) -> float:
    """Fine-tune a fresh copy of the model on `rows`; return its loss on the target rows."""
    import torch

    torch.manual_seed(args.seed)
    model, tokenizer = load(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    order = list(rows)
    started = time.monotonic()
    for epoch in range(args.epochs):
        random.Random(args.seed + epoch).shuffle(order)
        model.train()
        for batch in batches(tokenizer, order, args.batch_size, args.max_length):
            loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    loss = target_loss(model, tokenizer, test, args.max_length)
    console.print(
        f"{label}: {len(rows)} rows x {args.epochs} epochs in "
        f"{time.monotonic() - started:.0f} s -> target loss {loss:.4f}"
    )
    return loss


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-url", default=os.environ.get("TOV_API_URL"))
    parser.add_argument("--api-key", default=os.environ.get("TOV_API_KEY"))
    parser.add_argument("--pool", type=Path, default=DATA / "pool.jsonl")
    parser.add_argument("--validation", type=Path, default=DATA / "validation.jsonl")
    parser.add_argument(
        "--test",
        type=Path,
        default=DATA / "test.jsonl",
        help="held-out target examples for the loss",
    )
    parser.add_argument("--model", default=MODEL, help="model name on the server")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=MODELS / MODEL,
        help="the same model, locally, for fine-tuning",
    )
    parser.add_argument("--budget", type=float, default=24)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.model_dir / "config.json").is_file():
        raise SystemExit(f"{args.model_dir} is missing: python scripts/prepare_model.py {MODEL}")

    STATE.mkdir(parents=True, exist_ok=True)
    if args.api_url:
        with Client(args.api_url, args.api_key) as client:
            chosen, job_id = select(client, args)
    else:
        with embedded_service() as (url, key), Client(url, key) as client:
            chosen, job_id = select(client, args)

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pool, test = read_jsonl(args.pool), read_jsonl(args.test)
    baseline = random.Random(args.seed).sample(pool, len(chosen))
    model, tokenizer = load(args.model_dir)
    before = target_loss(model, tokenizer, test, args.max_length)
    del model
    console.print(f"before fine-tuning: target loss {before:.4f}")
    with_tov = finetune(args.model_dir, chosen, test, args, "ToV selection")
    with_random = finetune(args.model_dir, baseline, test, args, "random subset")

    table = Table(
        title=f"Loss on {len(test)} held-out target rows ({args.test.name}), job {job_id}"
    )
    table.add_column("fine-tuned on")
    table.add_column("rows", justify="right")
    table.add_column("target loss", justify="right")
    table.add_row("nothing (base model)", "0", f"{before:.4f}")
    table.add_row("ToV selection", str(len(chosen)), f"{with_tov:.4f}")
    table.add_row("random subset", str(len(baseline)), f"{with_random:.4f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
