"""/metrics is open by default; with TOV_METRICS_TOKEN set it takes that bearer token only."""

from __future__ import annotations

from typing import Any

from tests.app.test_datasets_api import auth


def test_metrics_are_open_without_a_token(client: Any) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "tov_http_requests_total" in response.text


def test_metrics_token_is_required_when_configured(
    client: Any, api_key: str, monkeypatch: Any
) -> None:
    from pydantic import SecretStr

    from app.core.config import get_settings

    monkeypatch.setattr(get_settings(), "metrics_token", SecretStr("scrape-secret"))
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert missing.json()["detail"] == (
        "/metrics needs Authorization: Bearer <metrics token> (TOV_METRICS_TOKEN)."
    )
    for headers in (auth("wrong"), auth(api_key), {"Authorization": "Basic scrape-secret"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert "tov_" not in refused.text
    assert client.get("/metrics", headers=auth("wrong")).json()["detail"] == (
        "Invalid metrics token."
    )
    allowed = client.get("/metrics", headers=auth("scrape-secret"))
    assert allowed.status_code == 200
    assert "tov_http_requests_total" in allowed.text
    assert client.get("/healthz").status_code == 200  # the probes stay open
