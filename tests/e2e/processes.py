"""Start the real API and worker processes for end-to-end tests, and stop them by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.launcher import api_command, worker_command

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@contextmanager
def running_api(env: dict[str, str], logs: Path) -> Iterator[str]:
    port = free_port()
    process = start(api_command("127.0.0.1", port), env, logs / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        stop(process)


@contextmanager
def running_worker(
    env: dict[str, str], logs: Path, name: str = "worker"
) -> Iterator[subprocess.Popen[bytes]]:
    queues = [env["TOV_TASK_QUEUE"], f"{env['TOV_TASK_QUEUE']}.select"]
    command = [*worker_command(1, queues), "--hostname", f"{name}-{os.getpid()}@%h"]
    process = start(command, env, logs / f"{name}.log")
    try:
        yield process
    finally:
        stop(process)


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not finish in {timeout} s")


PYTHON = sys.executable
