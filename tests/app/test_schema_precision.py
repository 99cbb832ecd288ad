"""The OpenAPI document says exactly what the API accepts (schemathesis findings): empty dataset
references and non-RFC 3339 datetimes are refused with a precise 422 problem, never accepted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.app.test_datasets_api import auth
from tests.app.test_jobs_api import datasets


def test_empty_references_are_refused_by_the_schema(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    for body, field in (
        ({"pool": "", "validation": validation}, "body.pool"),
        ({"pool": pool, "validation": ""}, "body.validation"),
    ):
        response = client.post("/v1/jobs", json=body, headers=auth(api_key))
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["errors"][0]["field"] == field
        assert "at least 1 character" in problem["errors"][0]["reason"]
    empty_uri = client.post("/v1/datasets", json={"uri": ""}, headers=auth(api_key))
    assert empty_uri.status_code == 422
    assert empty_uri.headers["content-type"].startswith("application/problem+json")
    assert empty_uri.json()["errors"] == [
        {"field": "body.uri", "reason": "String should have at least 1 character"}
    ]
    assert empty_uri.json()["detail"] == "body.uri: String should have at least 1 character"
    extra = client.post(
        "/v1/datasets", json={"uri": "file:///x", "colour": 1}, headers=auth(api_key)
    )
    assert extra.json()["errors"][0]["field"] == "body.colour"
    broken = client.post(
        "/v1/datasets",
        content=b"{not json",
        headers={**auth(api_key), "Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["field"] == "body"
    assert "Invalid JSON" in broken.json()["detail"]


def test_the_openapi_document_declares_the_limits(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    job_create = spec["components"]["schemas"]["JobCreate"]["properties"]
    assert job_create["pool"]["minLength"] == 1
    assert job_create["validation"]["minLength"] == 1
    register = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert register["application/json"]["schema"]["properties"]["uri"]["minLength"] == 1
    params = {p["name"]: p for p in spec["paths"]["/v1/jobs"]["get"]["parameters"]}
    for name in ("created_after", "created_before"):
        kinds = params[name]["schema"]["anyOf"]
        assert {"type": "string", "format": "date-time"} in kinds, kinds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be an RFC 3339 date-time with a time zone"),
        ("1700000000", "must be an RFC 3339 date-time with a time zone"),
        ("2026-01-31T09:30:00", "must be an RFC 3339 date-time with a time zone"),
        ("2026-01-31", "must be an RFC 3339 date-time with a time zone"),
        ("2026-01-31 09:30:00Z", "must be an RFC 3339 date-time with a time zone"),
        ("2026-02-30T00:00:00Z", "'2026-02-30T00:00:00Z' is not a valid date and time"),
        ("2026-01-31T25:00:00Z", "is not a valid date and time"),
        ("0001-01-01T00:00:00+01:00", "is out of range once converted to UTC"),
        ("9999-12-31T23:59:59-01:00", "is out of range once converted to UTC"),
    ],
)
def test_created_ranges_take_rfc3339_only(
    client: Any, api_key: str, value: str, reason: str
) -> None:
    response = client.get("/v1/jobs", params={"created_after": value}, headers=auth(api_key))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    error = response.json()["errors"][0]
    assert error["field"] == "query.created_after"
    assert reason in error["reason"], error


def test_created_ranges_filter_with_offsets(client: Any, api_key: str) -> None:
    pool, validation = datasets(client, api_key)
    job = client.post(
        "/v1/jobs", json={"pool": pool, "validation": validation}, headers=auth(api_key)
    ).json()

    def ids(**params: str) -> list[str]:
        response = client.get("/v1/jobs", params=params, headers=auth(api_key))
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert job["id"] in ids(created_after="2000-01-01T00:00:00Z")
    assert job["id"] in ids(created_after="2000-01-01T01:00:00.123456789+01:00")
    assert job["id"] not in ids(created_before="2000-01-01T00:00:00z")
    assert job["id"] not in ids(created_after="2999-01-01T00:00:00-05:00")
    assert job["id"] in ids(created_before="2999-12-31T23:59:60Z")  # a leap second is valid


def test_budget_and_metadata_filters_are_declared_exactly(client: Any, api_key: str) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    budget = schemas["SelectionParams"]["properties"]["budget"]
    assert budget["anyOf"] == [
        {"type": "integer", "minimum": 1},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    ]
    assert schemas["JobCreate"]["properties"]["pool"]["pattern"].startswith("^(ds_|/|")
    params = {p["name"]: p for p in spec["paths"]["/v1/jobs"]["get"]["parameters"]}
    items = params["metadata"]["schema"]["anyOf"][0]["items"]
    assert items == {"type": "string", "pattern": "^[^:]+:"}

    pool, validation = datasets(client, api_key)
    for value in ("1e400", "NaN", "2.5"):
        response = client.post(
            "/v1/jobs",
            content=f'{{"pool": "{pool}", "validation": "{validation}", '
            f'"selection": {{"budget": {value}}}}}',
            headers={**auth(api_key), "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (value, response.text)
        assert response.json()["errors"][0]["field"] == "body.selection.budget"
    bad_filter = client.get(
        "/v1/jobs", params=[("metadata", "team:a"), ("metadata", "nocolon")], headers=auth(api_key)
    )
    assert bad_filter.status_code == 422
    assert bad_filter.json()["errors"] == [
        {
            "field": "query.metadata.1",
            "reason": "Value error, must look like key:value (a non-empty key, a colon, then "
            "the value)",
        }
    ]
    assert client.get("/v1/jobs", params={"metadata": "team:"}, headers=auth(api_key)).is_success
