"""`tov-serve`: the whole service in one command (API + local worker), stopped together.

Embedded by default (SQLite, a broker-less Celery transport, a local artifact folder); with
TOV_DATABASE_URL and TOV_BROKER_URL pointing at PostgreSQL and Redis it runs the production stack.
The worker runs as a separate process: this module never imports it (nor torch).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from app.core.config import get_settings
from app.migrate import upgrade_database

logger = logging.getLogger("tov.serve")


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
    ]


CELERY_WORKER = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
QUIET = ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]


def worker_command(concurrency: int, queues: list[str] | None = None) -> list[str]:
    """A GPU worker: one process per GPU, a fresh child per job (frees GPU memory)."""
    queue = ",".join(queues or [get_settings().task_queue])
    return [
        *CELERY_WORKER,
        *QUIET,
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--max-tasks-per-child",
        "1",
        "-Q",
        queue,
    ]


def selector_command() -> list[str]:
    """A CPU worker for re-selections from stored scores, kept off the GPU queue."""
    return [
        *CELERY_WORKER,
        *QUIET,
        "--pool",
        "solo",
        "-Q",
        get_settings().select_queue,
        "-n",
        "selector@%h",
    ]


def _stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tov-serve", description=__doc__)
    settings = get_settings()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (0: none)")
    parser.add_argument("--skip-migrate", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    if not args.skip_migrate:
        upgrade_database()
    env = dict(os.environ)
    processes = [subprocess.Popen(api_command(args.host, args.port), env=env)]
    processes += [subprocess.Popen(worker_command(1), env=env) for _ in range(args.workers)]
    if args.workers:
        processes.append(subprocess.Popen(selector_command(), env=env))
    logger.info(
        "API on http://%s:%d (docs at /docs); %d worker(s); database %s",
        args.host,
        args.port,
        args.workers,
        settings.database_url.split("@")[-1],
    )

    def _on_signal(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        logger.error("a service process exited; stopping the others")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the shutdown
        _stop_all(processes)


if __name__ == "__main__":
    sys.exit(main())
