"""S1 harness: schemathesis (all checks) against a real API process and our OpenAPI document.

Used by tests/security/test_schemathesis.py (a bounded run in CI) and by
benchmarks/security/run_schemathesis.py (the long run, >= 10,000 requests). The API runs as a real
uvicorn process on PostgreSQL; a tenant owns real resources (datasets, a queued job, a succeeded
job with scores and a selection) and schemathesis draws path ids, query ids and job references
from them half of the time (a schemathesis dictionary), so the fuzzing reaches past the 404s.
Every request and answer is recorded (HAR) and counted: the bar is 0 server errors (5xx).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
ROWS = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(8)]


@dataclass
class FuzzResult:
    requests: int
    statuses: dict[int, int]
    server_errors: int
    failures: dict[str, int]  # schemathesis failure code and title -> count
    seconds: float
    exit_code: int
    server_error_samples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "check_failures": self.failures,
            "seconds": round(self.seconds, 1),
            "schemathesis_exit_code": self.exit_code,
            "server_error_samples": self.server_error_samples[:10],
        }


def seed_resources(url: str, key: str, database_url: str) -> dict[str, list[str]]:
    """Real resources of the fuzzing tenant; returns ids by kind."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from tests.service_fixtures import finish_with_results

    headers = {"Authorization": f"Bearer {key}"}
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        datasets = [
            client.post(
                f"/v1/datasets?name=fuzz-{i}.jsonl",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            ).json()["id"]
            for i in range(3)
        ]
        jobs = [
            client.post(
                "/v1/jobs",
                json={
                    "pool": datasets[0],
                    "validation": datasets[1],
                    "seed": seed,
                    "selection": {"budget": 3},
                },
            ).json()["id"]
            for seed in range(3)
        ]
    engine = create_engine(database_url)
    with Session(engine) as session:
        scores = np.linspace(-1, 1, len(ROWS))
        selection_id = finish_with_results(session, jobs[1], scores, [0, 3, 5], [0, 0, 1])
        session.commit()
    engine.dispose()
    return {"dataset_id": datasets, "job_id": jobs, "selection_id": [selection_id]}


def write_config(path: Path, ids: dict[str, list[str]], probability: float = 0.5) -> Path:
    """A schemathesis.toml: ids drawn from our resources with `probability`."""
    refs = ids["dataset_id"] + ["file:///etc/passwd", "https://example.com/a.jsonl"]
    lines = []
    for name, values in {**ids, "refs": refs}.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for name in ids:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = {probability} }}')
    lines.append(
        f'"query.selection_id" = {{ dictionary = "selection_id", probability = {probability} }}'
    )
    for name in ("pool", "validation"):
        lines.append(f'"body.{name}" = {{ dictionary = "refs", probability = {probability} }}')
    path.write_text("\n".join(lines) + "\n")
    return path


def run_schemathesis(
    url: str,
    key: str,
    *,
    workdir: Path,
    max_examples: int,
    seed: int,
    workers: int = 2,
    config: Path | None = None,
    max_time: int | None = None,
    timeout: float = 3600,
    phases: str | None = None,
) -> FuzzResult:
    har = workdir / "schemathesis.har.json"
    command = [sys.executable, "-m", "schemathesis.cli"]
    if config is not None:
        command += ["--config-file", str(config)]
    command += [
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "-H",
        f"Authorization: Bearer {key}",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--continue-on-failure",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--request-timeout",
        "30",
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    if max_time:
        command += ["--max-time", str(max_time)]
    if phases:
        command += ["--phases", phases]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=workdir,  # schemathesis and hypothesis keep their state there, not in the repo
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    seconds = time.monotonic() - started
    (workdir / "schemathesis.out.txt").write_text(done.stdout + "\n" + done.stderr)
    statuses: collections.Counter[int] = collections.Counter()
    samples = []
    if har.exists():
        for entry in json.loads(har.read_text())["log"]["entries"]:
            status = int(entry["response"]["status"])
            statuses[status] += 1
            if status >= 500:
                samples.append(
                    {
                        "method": entry["request"]["method"],
                        "url": entry["request"]["url"],
                        "status": status,
                        "body": entry["response"].get("content", {}).get("text", "")[:500],
                    }
                )
    failures = {
        f"{m.group(1)} {m.group(2).strip()}": int(m.group(3))
        for m in re.finditer(r"(ST\d+) ([^:\n]+): (\d+)", done.stdout)
    }
    return FuzzResult(
        requests=sum(statuses.values()),
        statuses=dict(statuses),
        server_errors=sum(n for s, n in statuses.items() if s >= 500),
        failures=failures,
        seconds=seconds,
        exit_code=done.returncode,
        server_error_samples=samples,
    )


def drop_queue(broker_url: str, queue: str) -> None:
    """Remove the messages the fuzzed API published to its own queue names."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.delete(queue, f"{queue}.select")
    finally:
        client.close()
