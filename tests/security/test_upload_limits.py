"""S5: uploads far over the limit get 413 after at most ~the limit is read; memory stays flat.

A real uvicorn process runs with TOV_MAX_UPLOAD_BYTES = 1 MiB. Over raw sockets we send 64 MiB
bodies in several shapes (chunked, declared Content-Length, JSON registration bodies, a job body,
Parquet) and stop as soon as the server answers. We measure, from /proc of the API process:
- rchar (bytes read by its read system calls) during each request: at most the limit + 1 MiB;
- VmRSS before, VmHWM (peak RSS, reset first) after the whole run: the peak grows < 25 MiB
  although ~1.3 GiB were offered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.helpers import post_streaming, running_api
from tests.service_fixtures import make_key

LIMIT = 1024 * 1024
OFFERED = 64 * 1024 * 1024
SLACK = 1024 * 1024  # socket buffers and one chunk in flight
ROUNDS = 3


@pytest.fixture(scope="module")
def small_api(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("s5") / "api.log"
    env = {**service_env, "TOV_MAX_UPLOAD_BYTES": str(LIMIT)}
    with running_api(env, log) as api:
        yield api, make_key("s5")


SHAPES = [
    ("/v1/datasets?name=big.jsonl", "application/x-ndjson", True),
    ("/v1/datasets?name=big.jsonl", "application/x-ndjson", False),
    ("/v1/datasets?name=big.parquet", "application/vnd.apache.parquet", True),
    ("/v1/datasets?name=big.csv", "text/csv", False),
    ("/v1/datasets", "application/json", True),
    ("/v1/datasets", "application/json", False),
    ("/v1/jobs", "application/json", True),
]


def test_oversized_uploads_are_cut_off_and_memory_stays_flat(
    small_api,
    service_dirs: dict[str, Path],  # type: ignore[no-untyped-def]
) -> None:
    api, key = small_api
    headers = {"Authorization": f"Bearer {key}"}
    # Warm up the code paths (imports, pools) with a good upload and a refused one.
    ok = post_streaming(
        api.port,
        "/v1/datasets?name=ok.jsonl",
        {**headers, "Content-Type": "application/x-ndjson"},
        1000,
        chunked=True,
    )
    assert ok.status in (201, 422), ok
    post_streaming(
        api.port,
        "/v1/datasets",
        {**headers, "Content-Type": "application/x-ndjson"},
        2 * LIMIT,
        chunked=True,
    )
    rss_before = api.status("VmRSS")
    api.reset_peak_rss()
    report = []
    for _ in range(ROUNDS):
        for path, content_type, chunked in SHAPES:
            read_before = api.io("rchar")
            answer = post_streaming(
                api.port, path, {**headers, "Content-Type": content_type}, OFFERED, chunked=chunked
            )
            read = api.io("rchar") - read_before
            report.append((path, content_type, chunked, answer.status, answer.sent, read))
            assert answer.status == 413, (path, content_type, chunked, answer)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.headers.get("connection") == "close"
            assert b"exceeds the limit" in answer.body
            limit = LIMIT if content_type != "application/json" else 1024 * 1024
            assert read <= limit + SLACK, (path, content_type, chunked, read)
    peak = api.status("VmHWM")
    growth = peak - rss_before
    for row in report:
        print("S5", *row)
    print(
        f"S5 RSS before {rss_before / 2**20:.1f} MiB, peak during {peak / 2**20:.1f} MiB, "
        f"offered {len(report) * OFFERED / 2**30:.2f} GiB"
    )
    assert growth < 25 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert not list((service_dirs["artifacts"] / "incoming").glob("*.part"))
    # The server still answers normally afterwards.
    again = post_streaming(
        api.port,
        "/v1/datasets?name=ok.jsonl",
        {**headers, "Content-Type": "application/x-ndjson"},
        1000,
        chunked=True,
    )
    assert again.status in (201, 422), again
