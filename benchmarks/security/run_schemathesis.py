"""S1, the long run: schemathesis with all checks against a real API, >= 10,000 requests.

    .venv/bin/python -m benchmarks.security.run_schemathesis [--max-examples 150] [--seed 7]

Starts uvicorn on a throw-away PostgreSQL database (Redis on 6379 with a queue name of its own,
emptied afterwards), gives a tenant real resources (tests/security/fuzz.py), runs schemathesis over
every operation of /openapi.json (examples, coverage, fuzzing and stateful phases), and prints the
number of requests, the statuses and the server errors (the bar: 0). Writes
benchmarks/results/schemathesis.json. Exits 1 on any 5xx or when fewer than --min-requests were
made.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

from benchmarks.common import throwaway_database, write_result

REDIS_URL = os.environ.get("TOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-requests", type=int, default=10_000)
    parser.add_argument(
        "--max-time",
        type=int,
        default=720,
        help="seconds; fuzzing and stateful phases repeat until it is spent",
    )
    args = parser.parse_args(argv)

    from tests.security.fuzz import drop_queue, run_schemathesis, seed_resources, write_config
    from tests.security.helpers import running_api

    with tempfile.TemporaryDirectory(prefix="tov-st-") as tmp, throwaway_database() as url:
        work = Path(tmp)
        for name in ("artifacts", "data"):
            (work / name).mkdir()
        queue = f"tov_fuzz_{secrets.token_hex(4)}"
        env = {
            "TOV_DATABASE_URL": url,
            "TOV_BROKER_URL": REDIS_URL,
            "TOV_TASK_QUEUE": queue,
            "TOV_ARTIFACT_ROOT": str(work / "artifacts"),
            "TOV_SHARED_DATA_ROOTS": json.dumps([str(work / "data")]),
            "TOV_MAX_UPLOAD_BYTES": str(1 << 20),
        }
        os.environ.update(env)
        from app.core.auth import create_key
        from app.core.db import get_sessionmaker

        with get_sessionmaker()() as session:
            _, key = create_key(session=session, tenant_name="fuzz")
            session.commit()
        try:
            with running_api(env, work / "api.log") as api:
                ids = seed_resources(api.url, key, url)
                config = write_config(work / "schemathesis.toml", ids)
                result = run_schemathesis(
                    api.url,
                    key,
                    workdir=work,
                    config=config,
                    max_examples=args.max_examples,
                    seed=args.seed,
                    workers=args.workers,
                    max_time=args.max_time,
                )
            log = (work / "api.log").read_text()
        finally:
            drop_queue(REDIS_URL, queue)
        summary = {
            **result.as_dict(),
            "max_examples": args.max_examples,
            "seed": args.seed,
            "tracebacks_in_api_log": log.count("Traceback"),
        }
        print(json.dumps(summary, indent=2))
        out = (work / "schemathesis.out.txt").read_text()
        print(out[-15000:] if result.server_errors else out[out.rfind("SUMMARY") - 40 :])
        print(
            f"S1: {result.requests} requests, {result.server_errors} server errors (5xx), "
            f"{summary['tracebacks_in_api_log']} tracebacks in the API log, "
            f"{result.seconds:.0f} s"
        )
        write_result("schemathesis", summary)
        ok = result.server_errors == 0 and result.requests >= args.min_requests
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
