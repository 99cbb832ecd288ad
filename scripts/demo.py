"""`make demo`: start the embedded service, run one real selection job over HTTP, show the result.

Nothing needs to run beforehand: the service uses a SQLite file, a broker-less Celery transport,
one local worker process and a local artifact folder under .tov/demo, and stops at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".tov" / "demo"
MODELS = REPO / ".cache" / "models"
DATA = REPO / "demo" / "data"
MODEL = "smollm2-135m-instruct"
console = Console()

JOB = {
    "model": MODEL,
    "selection": {"budget": 24, "strategy": "score+random"},
    # Small on purpose: 2 CPU cores. Each round trains on U and on the validation set, then scores
    # the rest of the pool twice (before/after adapters).
    "tov": {"rounds": 2, "learning_rate": 1e-3, "batch_size": 8},
    "max_length": 128,
    "seed": 0,
    "metadata": {"demo": True},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "TOV_DATABASE_URL": f"sqlite:///{STATE}/tov.db",
        "TOV_BROKER_URL": f"sqla+sqlite:///{STATE}/broker.db",
        "TOV_ARTIFACT_ROOT": str(STATE / "artifacts"),
        "TOV_SHARED_DATA_ROOTS": json.dumps([str(DATA)]),
        "TOV_MODEL_ROOTS": json.dumps([str(MODELS)]),
        "TOV_PORT": str(port),
    }


def wait_ready(url: str, service: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"the service exited early; see {STATE / 'service.log'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service did not become ready; see {STATE / 'service.log'}")


def follow(client: httpx.Client, job_id: str) -> dict[str, object]:
    columns = [
        TextColumn("[bold]{task.fields[stage]:>8}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("job", total=1.0, stage="queued", eta="")
        while True:
            try:
                job = client.get(f"/v1/jobs/{job_id}").json()
            except httpx.HTTPError as exc:
                raise SystemExit(f"lost the service ({exc}); see {STATE / 'service.log'}") from exc
            progress = job["progress"]
            eta = f"ETA {progress['eta_seconds']:.0f}s" if progress["eta_seconds"] else ""
            bar.update(
                task, completed=progress["fraction"], stage=progress["stage"] or "queued", eta=eta
            )
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return dict(job)
            time.sleep(1)


def source_group(row: dict[str, object]) -> str:
    """The row's source; the many one-row MMLU subjects count as one group."""
    source = str(row.get("source", "?"))
    return "mmlu:*" if source.startswith("mmlu:") else source


def summarise(
    selection: list[dict[str, object]], pool: list[dict[str, object]], target: str
) -> None:
    pool_share = Counter(source_group(r) for r in pool)
    chosen = Counter(source_group(pool[int(str(r["index"]))]) for r in selection)
    scored = Counter(
        source_group(pool[int(str(r["index"]))]) for r in selection if r["source"] == "score"
    )
    table = Table(title="Selection by pool source")
    for column in ("source", "pool rows", "pool %", "selected", "selected %", "score half"):
        table.add_column(column, justify="right" if column != "source" else "left")
    n_score = max(1, sum(scored.values()))
    for source, count in pool_share.most_common():
        mark = " (target)" if source == target else ""
        table.add_row(
            source + mark,
            str(count),
            f"{100 * count / len(pool):.1f}",
            str(chosen[source]),
            f"{100 * chosen[source] / len(selection):.1f}",
            f"{100 * scored[source] / n_score:.1f}%",
        )
    console.print(table)


def main() -> int:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_model.py"), MODEL, "--dest", str(MODELS)],
        check=True,
    )
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    port = free_port()
    env = service_env(port)
    subprocess.run(
        [sys.executable, "-m", "app.admin", "migrate"], env=env, check=True, capture_output=True
    )
    key = subprocess.run(
        [sys.executable, "-m", "app.admin", "keys", "create", "--tenant", "demo"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    api_key = key.stdout.strip()
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
    try:
        console.print(f"service starting on {url} (log: {STATE / 'service.log'})")
        wait_ready(url, service)
        return run_job(url, api_key, started)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        console.print("service stopped")


def run_job(url: str, api_key: str, started: float) -> int:
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    pool_file, validation_file = DATA / "pool.jsonl", DATA / "validation.jsonl"
    pool = [json.loads(line) for line in pool_file.read_text().splitlines() if line.strip()]
    uploaded = client.post(
        "/v1/datasets?name=pool.jsonl",
        content=pool_file.read_bytes(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    uploaded.raise_for_status()
    console.print(f"uploaded the pool: {uploaded.json()['rows']} rows ({uploaded.json()['id']})")
    body = {**JOB, "pool": uploaded.json()["id"], "validation": f"file://{validation_file}"}
    created = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "demo-1"})
    created.raise_for_status()
    job_id = created.json()["id"]
    console.print(f"job {job_id} accepted; following its progress")
    job = follow(client, job_id)
    if job["status"] != "succeeded":
        console.print(f"[red]job {job['status']}: {job['error']}")
        return 1
    out = STATE / "selection.jsonl"
    out.write_bytes(client.get(f"/v1/jobs/{job_id}/selection").content)
    # Every pool row's score too: the file whose hash shows a refactor changed no result.
    (STATE / "scores.jsonl").write_bytes(client.get(f"/v1/jobs/{job_id}/scores").content)
    selection = [json.loads(line) for line in out.read_text().splitlines()]
    target = Counter(
        json.loads(line).get("source", "?") for line in validation_file.read_text().splitlines()
    ).most_common(1)[0][0]
    console.print(
        f"selected {len(selection)} of {len(pool)} pool rows "
        f"({sum(r['source'] == 'score' for r in selection)} by score, "
        f"{sum(r['source'] == 'random' for r in selection)} at random); "
        f"validation target: {target}"
    )
    summarise(selection, pool, target)
    console.print(f"selection written to {out}, every row's score to {STATE / 'scores.jsonl'}")
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
