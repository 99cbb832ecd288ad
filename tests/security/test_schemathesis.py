"""S1 in CI: a bounded schemathesis run (all checks, a few hundred requests) against a real API.

The long run (>= 10,000 requests) is benchmarks/security/run_schemathesis.py. The bar here is the
same: not one server error (5xx) and no traceback in the API's log. Other check failures
(schema-precision findings) are printed, not failed on; see the benchmark's result file.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.security.fuzz import drop_queue, run_schemathesis, seed_resources, write_config
from tests.security.helpers import running_api
from tests.service_fixtures import REDIS_URL, make_key


def test_schemathesis_finds_no_server_error(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("schemathesis")
    queue = f"tov_fuzz_{secrets.token_hex(4)}"
    env = {**service_env, "TOV_TASK_QUEUE": queue, "TOV_MAX_UPLOAD_BYTES": str(1 << 20)}
    key = make_key(f"fuzz-{secrets.token_hex(3)}")
    try:
        with running_api(env, work / "api.log") as api:
            ids = seed_resources(api.url, key, service_env["TOV_DATABASE_URL"])
            config = write_config(work / "schemathesis.toml", ids)
            result = run_schemathesis(
                api.url,
                key,
                workdir=work,
                config=config,
                max_examples=10,
                seed=11,
                workers=1,
                phases="examples,fuzzing",
                max_time=75,
                timeout=240,
            )
        log = (work / "api.log").read_text()
    finally:
        drop_queue(REDIS_URL, queue)
    print("S1", json.dumps(result.as_dict()))
    assert result.requests >= 300, Path(work / "schemathesis.out.txt").read_text()[-3000:]
    assert result.server_errors == 0, result.server_error_samples
    assert "Traceback" not in log, log[-3000:]
