"""The whole fault suite (R1-R7, tests/faults) including its long runs: R1 with 20 jobs.

`make test` runs tests/faults in its CI size (R1 with 6 jobs); this runs it with
TOV_FAULTS_LONG=1, so R1 also kills the worker in 20 jobs, and collects each test's report line.
The stand-in engine is used throughout; run_r1_real_engine.py does R1 with the real engine.

    .venv/bin/python -m benchmarks.faults.run_fault_suite [extra pytest arguments]

Writes benchmarks/results/faults_suite.json; exit status is pytest's.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result

REPO = Path(__file__).resolve().parents[2]
REPORT = re.compile(r"^(R\d[^:]*?) report: (\{.*\})$")
console = Console(width=160)


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/faults",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            *extra,
        ],
        cwd=REPO,
        env={**os.environ, "TOV_FAULTS_LONG": "1"},
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    reports: dict[str, dict[str, object]] = {}
    for line in process.stdout.splitlines():
        match = REPORT.match(line.strip())
        if match:  # the last report line of a test is its complete one
            report = ast.literal_eval(match.group(2))
            key = match.group(1) + (f" ({report['jobs']} jobs)" if "jobs" in report else "")
            reports[key] = report
    summary = process.stdout.strip().splitlines()[-1] if process.stdout.strip() else ""
    table = Table(title=f"Fault suite with long runs: {summary} ({seconds:.0f} s)")
    table.add_column("test")
    table.add_column("report")
    for name, report in reports.items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in report.items()))
    console.print(table)
    if process.returncode:
        console.print(process.stdout[-6000:])
        console.print(process.stderr[-3000:])
    path = write_result(
        "faults_suite",
        {
            "exit_status": process.returncode,
            "seconds": round(seconds, 1),
            "summary": summary,
            "reports": reports,
        },
    )
    console.print(f"written to {path}")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
