"""The dashboard's pages, static files and JSON endpoints over HTTP (no browser, no worker)."""

from __future__ import annotations

import json
from typing import Any

from tests.service_fixtures import make_key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_pages_are_shells_with_a_strict_policy(client: Any) -> None:
    for path in ("/ui", "/ui/jobs/job_0123abc"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert page.headers["cache-control"] == "no-store"
        html = page.text
        assert 'id="login-form"' in html and "/ui/static/dashboard.js" in html
        assert "http://" not in html and "https://" not in html  # nothing from outside
    assert 'data-job-id="job_0123abc"' in client.get("/ui/jobs/job_0123abc").text
    assert client.get("/ui/jobs/<script>").status_code == 404
    assert client.get("/ui/jobs/a%22b").status_code == 404


def test_static_files_are_served_and_nothing_else(client: Any) -> None:
    for name, kind in [
        ("dashboard.js", "javascript"),
        ("charts.js", "javascript"),
        ("dashboard.css", "css"),
    ]:
        response = client.get(f"/ui/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in response.text
    assert client.get("/ui/static/../routes/ui.py").status_code == 404
    assert client.get("/ui/static/ui.py").status_code == 404


def test_chart_data_needs_a_key_and_a_finished_job(client: Any) -> None:
    for path in ("/ui/api/jobs/job_x/summary", "/ui/api/jobs/job_x/composition"):
        refused = client.get(path)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
    key = make_key("ui-pages")
    assert client.get("/ui/api/jobs/job_x/summary", headers=auth(key)).status_code == 404
    rows = "".join(json.dumps({"text": f"row {i}", "source": "a"}) + "\n" for i in range(4))
    dataset = client.post(
        "/v1/datasets?name=p.jsonl",
        content=rows.encode(),
        headers={**auth(key), "Content-Type": "application/x-ndjson"},
    ).json()
    job = client.post(
        "/v1/jobs",
        json={"pool": dataset["id"], "validation": dataset["id"], "selection": {"budget": 2}},
        headers=auth(key),
    ).json()
    queued = client.get(f"/ui/api/jobs/{job['id']}/summary", headers=auth(key))
    assert queued.status_code == 409 and "queued" in queued.json()["detail"]
    bad = client.get(f"/ui/api/jobs/{job['id']}/composition?column=a%20b", headers=auth(key))
    assert bad.status_code == 422
    stranger = make_key("ui-stranger")
    assert (
        client.get(f"/ui/api/jobs/{job['id']}/summary", headers=auth(stranger)).status_code == 404
    )
    assert (
        client.get(f"/ui/api/jobs/{job['id']}/composition", headers=auth(stranger)).status_code
        == 404
    )
