"""A live service for client, CLI and dashboard tests: real uvicorn and Celery worker processes
on the test session's PostgreSQL database and Redis queue, with the tiny model; and a pool with a
`source` column, so every chart of the dashboard has data."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.processes import running_api, running_worker
from tov_client import Client, Job

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Italy", "Rome"),
    ("Chile", "Santiago"),
    ("Egypt", "Cairo"),
    ("Spain", "Madrid"),
    ("Cuba", "Havana"),
    ("Nepal", "Kathmandu"),
    ("Ghana", "Accra"),
    ("Iran", "Tehran"),
]
ELEMENTS = [
    ("Iron", "Fe"),
    ("Gold", "Au"),
    ("Silver", "Ag"),
    ("Neon", "Ne"),
    ("Tin", "Sn"),
    ("Lead", "Pb"),
    ("Copper", "Cu"),
    ("Zinc", "Zn"),
    ("Helium", "He"),
    ("Argon", "Ar"),
]
WORDS = ["harbour", "lantern", "meadow", "quarry", "thimble", "orchard", "saddle", "glacier"]


def pool_rows(seed: int = 0) -> list[dict[str, object]]:
    """About 120 prompt/completion rows from four sources, of varied lengths."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for country, city in CAPITALS * 2:
        rows.append(
            {
                "prompt": f"What is the capital of {country}?",
                "completion": f"{city}.",
                "source": "quiz:capitals",
            }
        )
    for name, symbol in ELEMENTS * 2:
        rows.append(
            {
                "prompt": f"What is the chemical symbol for {name}?",
                "completion": f"{symbol}.",
                "source": "quiz:elements",
            }
        )
    for word in WORDS * 4:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30)))
        rows.append(
            {
                "prompt": f"Define the word '{word}'.",
                "completion": f"A {word}: {text}.",
                "source": "dict:words",
            }
        )
    for _ in range(40):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        rows.append(
            {"prompt": f"What is {a} plus {b}?", "completion": f"{a + b}.", "source": "math:sums"}
        )
    rng.shuffle(rows)
    return rows


VALIDATION = [
    {"prompt": f"What is the capital of {c}?", "completion": f"{city}.", "source": "quiz:capitals"}
    for c, city in [
        ("Sweden", "Stockholm"),
        ("Latvia", "Riga"),
        ("Chad", "N'Djamena"),
        ("Togo", "Lome"),
        ("Fiji", "Suva"),
        ("Oman", "Muscat"),
    ]
]

JOB = {
    "selection": {"budget": 24, "strategy": "score+random", "num_bins": 4},
    "tov": {"rounds": 2, "base_size": 8, "learning_rate": 0.01, "batch_size": 8},
    "max_length": 64,
    "seed": 1,
}


@dataclass
class Live:
    url: str
    key: str
    pool_path: Path
    validation_path: Path
    job: Job

    def client(self) -> Client:
        return Client(self.url, self.key, timeout=30)


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@contextmanager
def live_service(
    env: dict[str, str], key: str, data_dir: Path, logs: Path, job: dict[str, Any] | None = None
) -> Iterator[Live]:
    """Start the API and one worker, upload the pool, run one job (`job`, default JOB) to the
    end, and yield."""
    pool_path = write_rows(data_dir / "live-pool.jsonl", pool_rows())
    validation_path = write_rows(data_dir / "live-validation.jsonl", VALIDATION)
    with running_api(env, logs) as url, running_worker(env, logs):
        with Client(url, key, timeout=30) as client:
            pool = client.upload_dataset(pool_path)
            created = client.create_job(
                pool, f"file://{validation_path}", metadata={"suite": "live"}, **(job or JOB)
            )
            try:
                done = client.wait(created.id, poll_interval=0.3, timeout=240)
            except Exception as exc:
                log = (logs / "worker.log").read_text()[-3000:]
                raise AssertionError(f"the live job did not succeed: {exc}\n{log}") from exc
        yield Live(url, key, pool_path, validation_path, done)
