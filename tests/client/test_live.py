"""The client and the `tov` CLI against a real API process and a real worker that ran one job."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.client.live import Live, live_service, pool_rows
from tests.service_fixtures import make_key
from tov_client.cli import app
from tov_plan.rules import DEFAULT_STRATEGY

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    logs = tmp_path_factory.mktemp("client-live-logs")
    with live_service(service_env, make_key("client-live"), service_dirs["data"], logs) as svc:
        yield svc


def test_the_finished_job_downloads_in_every_format(live: Live, tmp_path: Path) -> None:
    pool = pool_rows()
    with live.client() as tov:
        job = tov.get_job(live.job.id)
        assert job.succeeded and job.progress.fraction == 1.0
        assert job.metadata == {"suite": "live"}

        frame = tov.read_frame(job.id, "selection")
        assert len(frame) == 24 and set(frame["source"]) == {"score", "random"}
        scores = tov.read_table(job.id, "scores")
        assert scores.num_rows == len(pool) and scores.column_names == ["index", "score", "length"]
        assert scores.column("score").null_count == 8  # the base subset is not scored
        indices = tov.selected_indices(job.id)
        assert indices == sorted(frame["index"].tolist())

        jsonl = tov.download(job.id, "selection", format="jsonl", dest=tmp_path)
        assert jsonl.name == f"{job.id}-selection.jsonl"
        assert [json.loads(line)["index"] for line in jsonl.read_text().splitlines()] == frame[
            "index"
        ].tolist()
        moved: list[int] = []
        as_csv = tov.download(
            job.id,
            "scores",
            format="csv",
            dest=tmp_path / "s" / "scores.csv",
            on_progress=lambda done, total: moved.append(done),
        )
        rows = list(csv.DictReader(io.StringIO(as_csv.read_text())))
        assert len(rows) == len(pool) and moved[-1] == as_csv.stat().st_size
        parquet = tov.download(job.id, "selection", format="parquet", dest=tmp_path / "sel.pq")
        assert pq.read_table(parquet).num_rows == 24
        into_new_folder = tov.download(job.id, "selection", dest=f"{tmp_path}/new/")
        assert into_new_folder == tmp_path / "new" / f"{job.id}-selection.jsonl"
        assert not list(tmp_path.rglob("*.part"))

        subset = tov.download_bytes(job.id, "subset").decode().splitlines()
        assert [json.loads(line) for line in subset] == [pool[i] for i in indices]


def cli(live: Live, *args: str) -> Any:
    runner = CliRunner()
    env = {"TOV_API_URL": live.url, "TOV_API_KEY": live.key}
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def cli_json(live: Live, *args: str) -> Any:
    result = cli(live, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_datasets_jobs_and_download(live: Live, tmp_path: Path) -> None:
    uploaded = cli_json(live, "datasets", "upload", str(live.validation_path), "--name", "v.jsonl")
    assert uploaded["name"] == "v.jsonl" and uploaded["rows"] == 6
    assert uploaded["id"] in {d["id"] for d in cli_json(live, "datasets", "list")}
    assert cli_json(live, "datasets", "show", uploaded["id"])["sha256"] == uploaded["sha256"]

    listed = cli_json(live, "jobs", "list", "--status", "succeeded", "-m", "suite=live")
    assert [j["id"] for j in listed["items"]] == [live.job.id]
    shown = cli_json(live, "jobs", "show", live.job.id, "--events")
    assert shown["status"] == "succeeded" and shown["events"][-1]["kind"] == "succeeded"
    waited = cli_json(live, "jobs", "wait", live.job.id)
    assert waited["progress"]["fraction"] == 1.0

    out = tmp_path / "selection.csv"
    written = cli_json(live, "download", live.job.id, "--format", "csv", "-o", str(out))
    assert written == {
        "path": str(out),
        "bytes": out.stat().st_size,
        "what": "selection",
        "format": "csv",
    }
    assert next(csv.reader(io.StringIO(out.read_text()))) == ["index", "score", "source"]
    rows = tmp_path / "rows"
    rows.mkdir()
    cli_json(live, "download", live.job.id, "--what", "subset", "-o", str(rows))
    assert len((rows / f"{live.job.id}-subset.jsonl").read_text().splitlines()) == 24

    # Human output: tables and a progress bar on stderr, no tracebacks.
    table = cli(live, "jobs", "list")
    assert table.exit_code == 0 and "succeeded" in table.stdout
    human = cli(live, "jobs", "show", live.job.id)
    assert human.exit_code == 0 and "score" in human.stdout
    assert cli(live, "datasets", "list").exit_code == 0


def test_cli_create_from_local_files_then_cancel(live: Live) -> None:
    created = cli_json(
        live,
        "jobs",
        "create",
        "--pool",
        str(live.pool_path),
        "--validation",
        f"file://{live.validation_path}",
        "--budget",
        "10",
        "--tov",
        "rounds=1",
        "--tov",
        "learning_rate=0.01",
        "-m",
        "suite=cancel",
        "--max-length",
        "32",
        "--params",
        '{"selection": {"num_bins": 2}}',
    )
    assert created["params"]["selection"] == {
        "budget": 10,
        "strategy": DEFAULT_STRATEGY,  # the tov CLI names none: the service's default
        "num_bins": 2,
        "min_per_bin": 0,
    }
    assert created["params"]["tov"]["rounds"] == 1 and created["metadata"] == {"suite": "cancel"}
    assert created["pool"].startswith("ds_")  # the local file was uploaded first
    cancelled = cli_json(live, "jobs", "cancel", created["id"])
    assert cancelled["id"] == created["id"]
    result = cli(
        live, "jobs", "wait", created["id"], "--interval", "0.2", "--timeout", "120", "--json"
    )
    assert result.exit_code == 3, result.output  # ended cancelled
    assert json.loads(result.stdout)["status"] == "cancelled"


def test_cli_reports_problems_with_exit_codes(live: Live) -> None:
    missing = cli(live, "jobs", "show", "job_nope")
    assert missing.exit_code == 1 and "404" in missing.stderr and "job_nope" in missing.stderr
    as_json = cli(live, "jobs", "show", "job_nope", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stderr)["error"]["status"] == 404
    runner = CliRunner()
    refused = runner.invoke(app, ["--api-key", "tov_wrong", "--api-url", live.url, "jobs", "list"])
    assert refused.exit_code == 1 and "401" in refused.stderr
    bad = cli(live, "jobs", "create", "--pool", "nope", "--validation", "ds_x")
    assert bad.exit_code == 2 and "neither a dataset id" in bad.output


def test_the_cli_runs_as_a_process(live: Live) -> None:
    env = {"TOV_API_URL": live.url, "TOV_API_KEY": live.key, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tov_client.cli", "jobs", "show", live.job.id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
