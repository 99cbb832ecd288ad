"""S4 (SSRF half) and remote references: >= 50 hostile URLs, 0 connections to the canary.

A canary listens on 127.0.0.1 and [::1] (on a free port, and on 443/80 where free) and counts
every TCP connection. Each URL is sent to the real API both as a dataset reference and as a job's
pool; each must be refused with a 4xx that says why, and the canary must see nothing. The allow-
list is `*` here so that the address rules, not the allow-list, are what is tested. DNS is a stub
(no query leaves the machine): names map to the addresses an attacker would choose.

The second half checks the download path itself against an HTTPS server of ours on 127.0.0.2
(allowed for that test only): a good file is stored and validated like an upload; redirects,
oversized bodies (declared or streamed), slow trickles, compressed answers, bad certificates and
error statuses are refused.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets.sources import https, network
from tests.security.helpers import (
    canary_listener,
    chunked,
    make_certificate,
    reply,
    tls_server,
    trickle,
)
from tests.service_fixtures import make_key

STUB_DNS: dict[str, list[str]] = {
    "evil.test": ["127.0.0.1"],
    "evil6.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "private.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
    "zero.test": ["0.0.0.0"],
    "cgnat.test": ["100.64.1.1"],
    "nat64.test": ["64:ff9b::7f00:1"],
    "sixtofour.test": ["2002:7f00:1::1"],
    "ula.test": ["fd12:3456::1"],
    "multicast.test": ["239.1.1.1"],
}


def _stub_getaddrinfo(real: Any) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        if host in STUB_DNS:
            return STUB_DNS[host]
        if host in ("localhost", "ip6-localhost", "ip6-loopback"):
            return list(real(host, port))  # /etc/hosts, no network
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test stub)")

    return resolve


def ssrf_urls(port: int) -> list[tuple[str, tuple[str, ...]]]:
    """(URL, phrases one of which the refusal must contain)."""
    p = port
    loop = ("loopback",)
    numeric = ("not a canonical IP address",)
    return [
        (f"https://127.0.0.1:{p}/pool.jsonl", loop),
        ("https://127.0.0.1/pool.jsonl", loop),
        (f"https://127.9.9.9:{p}/", loop),
        (f"https://localhost:{p}/pool.jsonl", loop),
        (f"https://localhost.:{p}/", loop),
        (f"https://LOCALHOST:{p}/", loop),
        (f"HTTPS://127.0.0.1:{p}/", loop),
        (f"https://2130706433:{p}/", numeric),
        (f"https://0x7f000001:{p}/", numeric),
        (f"https://0x7f.0x0.0x0.0x1:{p}/", numeric),
        (f"https://0177.0.0.1:{p}/", numeric),
        (f"https://0177.0000.0000.0001:{p}/", numeric),
        (f"https://017700000001:{p}/", numeric),
        (f"https://127.1:{p}/", numeric),
        (f"https://127.0.1:{p}/", numeric),
        (f"https://0:{p}/", numeric),
        (f"https://0.0.0.0:{p}/", ("unspecified",)),
        (f"https://[::1]:{p}/", loop),
        (f"https://[0:0:0:0:0:0:0:1]:{p}/", loop),
        (f"https://[::ffff:127.0.0.1]:{p}/", ("IPv4-mapped",)),
        (f"https://[::ffff:7f00:1]:{p}/", ("IPv4-mapped",)),
        (f"https://[0:0:0:0:0:ffff:127.0.0.1]:{p}/", ("IPv4-mapped",)),
        (f"https://[::127.0.0.1]:{p}/", ("embeds an IPv4",)),
        (f"https://[::]:{p}/", ("unspecified",)),
        (f"https://[64:ff9b::7f00:1]:{p}/", ("embeds an IPv4",)),
        (f"https://[2002:7f00:1::]:{p}/", ("embeds an IPv4",)),
        (f"https://[fe80::1]:{p}/", ("link-local",)),
        (f"https://[fe80::1%25lo]:{p}/", ("link-local", "not a valid host name")),
        (f"https://[fc00::1]:{p}/", ("private",)),
        (f"https://[ff02::1]:{p}/", ("multicast",)),
        ("https://169.254.169.254/latest/meta-data/", ("link-local",)),
        ("https://[fd00:ec2::254]/latest/meta-data/", ("private",)),
        ("https://10.0.0.1/", ("private",)),
        ("https://172.16.0.1/", ("private",)),
        ("https://192.168.1.1/", ("private",)),
        ("https://100.64.0.1/", ("shared", "not a public address", "private")),
        ("https://224.0.0.1/", ("multicast",)),
        ("https://240.0.0.1/", ("reserved", "private")),
        ("https://255.255.255.255/", ("reserved", "private")),
        (f"https://evil.test:{p}/pool.jsonl", loop),
        (f"https://evil6.test:{p}/", loop),
        (f"https://mapped.test:{p}/", ("IPv4-mapped",)),
        (f"https://private.test:{p}/", ("private",)),
        (f"https://metadata.test:{p}/", ("link-local",)),
        (f"https://mixed.test:{p}/", loop),
        (f"https://zero.test:{p}/", ("unspecified",)),
        (f"https://cgnat.test:{p}/", ("shared", "not a public address", "private")),
        (f"https://nat64.test:{p}/", ("embeds an IPv4",)),
        (f"https://sixtofour.test:{p}/", ("embeds an IPv4",)),
        (f"https://ula.test:{p}/", ("private",)),
        (f"https://multicast.test:{p}/", ("multicast",)),
        (f"https://127.0.0.1.nip.io:{p}/", ("could not be resolved",)),
        (f"http://127.0.0.1:{p}/pool.jsonl", ("scheme 'http' is not allowed",)),
        (f"http://localhost:{p}/", ("scheme 'http' is not allowed",)),
        (f"ftp://127.0.0.1:{p}/", ("scheme 'ftp' is not allowed",)),
        (f"gopher://127.0.0.1:{p}/_GET%20/", ("scheme 'gopher' is not allowed",)),
        (f"dict://127.0.0.1:{p}/info", ("scheme 'dict' is not allowed",)),
        (f"ldap://127.0.0.1:{p}/", ("scheme 'ldap' is not allowed",)),
        (f"https://user:pass@127.0.0.1:{p}/", ("Credentials",)),
        (f"https://allowed.example.com@127.0.0.1:{p}/", ("Credentials",)),
        (f"https://127.0.0.1:{p}#@allowed.example.com/", loop),
        (f"https://allowed.example.com\\@127.0.0.1:{p}/", ("backslashes",)),
        (f" https://127.0.0.1:{p}/", ("whitespace",)),
        (f"https://127.0.0.1:{p}/x\r\nHost: evil", ("whitespace",)),
        (f"https://127.0.0.1:{p}:443/", ("not a valid URL",)),
        (f"https://127.0.0.1%00.allowed.example.com:{p}/", ("not a valid host name",)),
        (f"https://\u2460\u2461\u2466.0.0.1:{p}/", ("ASCII",)),
        (f"https://127\u30020\u30020\u30021:{p}/", ("ASCII",)),
        ("s3://bucket/pool.jsonl", ("not configured",)),
        ("hf://datasets/org/name", ("not configured",)),
        ("gs://bucket/pool.jsonl", ("not configured",)),
    ]


@pytest.fixture()
def remote_env(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The API with remote references on (`*`), stub DNS, and a guard on outgoing connections:
    only loopback addresses are really connected (so a broken rule would hit the canary)."""
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    monkeypatch.setattr(get_settings(), "remote_hosts", ["*"])
    monkeypatch.setattr(network, "_getaddrinfo", _stub_getaddrinfo(network._getaddrinfo))
    attempts: list[str] = []
    real_open = https._open_socket

    def guarded(address: str, port: int, timeout: float) -> socket.socket:
        attempts.append(address)
        if not ipaddress.ip_address(address).is_loopback:
            raise ConnectionRefusedError("the test refuses connections off this machine")
        return real_open(address, port, timeout)

    monkeypatch.setattr(https, "_open_socket", guarded)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, make_key("ssrf"), attempts


def test_at_least_fifty_ssrf_urls() -> None:
    assert len(ssrf_urls(1)) >= 50


def test_no_ssrf_url_reaches_the_canary(remote_env: Any, service_dirs: dict[str, Path]) -> None:
    client, key, attempts = remote_env
    headers = {"Authorization": f"Bearer {key}"}
    with canary_listener() as canary:
        urls = ssrf_urls(canary.port)
        for url, phrases in urls:
            for response in (
                client.post("/v1/datasets?wait=true", json={"uri": url}, headers=headers),
                client.post("/v1/jobs", json={"pool": url, "validation": url}, headers=headers),
            ):
                assert 400 <= response.status_code < 500, (url, response.text)
                detail = response.json()["detail"]
                assert any(p in detail for p in phrases), (url, detail)
        assert canary.hits == [], canary.hits
    assert attempts == [], f"connections were attempted: {attempts}"
    assert not list((service_dirs["artifacts"] / "incoming").glob("*.part"))


def test_dns_is_resolved_once_and_the_checked_address_is_the_one_connected(
    remote_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer is public, later ones loopback. We resolve once, connect
    to the public address (refused here by the guard: nothing leaves the machine)."""
    client, key, attempts = remote_env
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    monkeypatch.setattr(network, "_getaddrinfo", rebinding)
    with canary_listener() as canary:
        response = client.post(
            "/v1/datasets?wait=true",
            json={"uri": f"https://rebind.test:{canary.port}/pool.jsonl"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 422, response.text
        assert "failed" in response.json()["detail"]
        assert canary.hits == []
    assert calls == ["rebind.test"]
    assert attempts == ["93.184.216.34"]


def test_the_allow_list_is_enforced(remote_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import get_settings

    client, key, attempts = remote_env
    headers = {"Authorization": f"Bearer {key}"}
    monkeypatch.setattr(get_settings(), "remote_hosts", [])
    off = client.post(
        "/v1/datasets?wait=true", json={"uri": "https://data.example.com/a.jsonl"}, headers=headers
    )
    assert off.status_code == 422
    assert "remote references are disabled" in off.json()["detail"]
    monkeypatch.setattr(get_settings(), "remote_hosts", ["data.example.com", "*.corp.example"])
    for url, allowed in (
        ("https://data.example.com/a.jsonl", True),
        ("https://x.corp.example/a.jsonl", True),
        ("https://corp.example/a.jsonl", False),
        ("https://data.example.com.evil.test/a.jsonl", False),
        ("https://evil.test/a.jsonl", False),
        ("https://xcorp.example/a.jsonl", False),
    ):
        response = client.post("/v1/datasets?wait=true", json={"uri": url}, headers=headers)
        assert response.status_code == 422, response.text
        on_list = "allow-list" not in response.json()["detail"]
        assert on_list == allowed, (url, response.json()["detail"])
    assert attempts == []


def test_address_rules_unit() -> None:
    refused = [
        "127.0.0.1",
        "10.0.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001::1",
        "fe80::1",
        "fc00::1",
        "fec0::1",
        "ff0e::1",
        "192.0.2.1",
        "198.18.0.1",
    ]
    for address in refused:
        assert network.address_refusal(address), address
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"):
        assert network.address_refusal(address) is None, address


# ---------------------------------------------------------------------------------------------
# The download path, against our own HTTPS server on 127.0.0.2


GOOD_ROWS = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(7)]


def _parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(9)]}), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"), "files.test")


@pytest.fixture()
def files_server(
    remote_env: Any, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    import ssl

    from app.core.config import get_settings

    cert, key_file = certificate
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 256 * 1024)
    jsonl = "".join(json.dumps(r) + "\n" for r in GOOD_ROWS).encode()
    with canary_listener() as canary:
        routes = {
            "/pool.jsonl": reply(200, jsonl, {"Content-Type": "application/x-ndjson"}),
            "/data.parquet": reply(
                200, _parquet_bytes(), {"Content-Type": "application/octet-stream"}
            ),
            "/export": reply(200, b"text\nhello\nworld\n", {"Content-Type": "text/csv"}),
            "/bad.jsonl": reply(200, b'{"prompt": "a"}\n'),
            "/gzip.jsonl": reply(200, gzip.compress(jsonl), {"Content-Encoding": "gzip"}),
            "/gzip-body.jsonl": reply(200, gzip.compress(jsonl)),
            "/declared-big.jsonl": reply(200, b"", {"Content-Length": str(10**9)}),
            "/streamed-big.jsonl": chunked(10 * 1024 * 1024),
            "/slow.jsonl": trickle(0.3, 100),
            "/error.jsonl": reply(500, b"oops"),
        }
        for code in (301, 302, 303, 307, 308):
            routes[f"/redirect-{code}"] = reply(
                code, b"", {"Location": f"https://127.0.0.1:{canary.port}/pool.jsonl"}
            )
        with tls_server(cert, key_file, routes) as (port, requested):
            STUB_DNS["files.test"] = ["127.0.0.2"]
            STUB_DNS["other-name.test"] = ["127.0.0.2"]
            real_refusal = network.address_refusal
            monkeypatch.setattr(
                network,
                "address_refusal",
                lambda a: None if a == "127.0.0.2" else real_refusal(a),
            )
            monkeypatch.setattr(
                https, "_ssl_context", lambda: ssl.create_default_context(cafile=str(cert))
            )
            try:
                yield {
                    "port": port,
                    "requested": requested,
                    "canary": canary,
                    "client": remote_env[0],
                    "key": remote_env[1],
                }
            finally:
                STUB_DNS.pop("files.test", None)
                STUB_DNS.pop("other-name.test", None)
        assert canary.hits == []


def _register(env: dict[str, Any], path: str, host: str = "files.test") -> Any:
    return env["client"].post(
        "/v1/datasets?wait=true",
        json={"uri": f"https://{host}:{env['port']}{path}"},
        headers={"Authorization": f"Bearer {env['key']}"},
    )


def test_a_remote_file_is_downloaded_into_the_store_and_validated(
    files_server: dict[str, Any], service_dirs: dict[str, Path]
) -> None:
    from app.core.db import get_sessionmaker
    from app.core.models import Dataset

    for path, fmt, rows in (
        ("/pool.jsonl", "jsonl", 7),
        ("/data.parquet", "parquet", 9),
        ("/export", "csv", 2),
    ):
        response = _register(files_server, path)
        assert response.status_code == 201, response.text
        data = response.json()
        assert (data["file_format"], data["rows"]) == (fmt, rows)
        with get_sessionmaker()() as session:
            stored = session.get(Dataset, data["id"])
            assert stored is not None and stored.uploaded
            assert Path(stored.uri).is_relative_to(service_dirs["artifacts"].resolve())
            assert Path(stored.uri).suffix == f".{fmt}"
    job = files_server["client"].post(
        "/v1/jobs",
        json={
            "pool": f"https://files.test:{files_server['port']}/pool.jsonl",
            "validation": f"https://files.test:{files_server['port']}/export",
        },
        headers={"Authorization": f"Bearer {files_server['key']}"},
    )
    assert job.status_code == 202, job.text


def test_remote_refusals(files_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        ("/bad.jsonl", 422, "must be a non-empty string"),
        ("/gzip.jsonl", 415, "Content-Encoding 'gzip'"),
        ("/gzip-body.jsonl", 415, "gzip-compressed"),
        ("/declared-big.jsonl", 413, "the limit is 262144"),
        ("/streamed-big.jsonl", 413, "larger than the limit of 262144 bytes"),
        ("/error.jsonl", 422, "answered HTTP 500"),
        ("/missing.jsonl", 422, "answered HTTP 404"),
    ] + [
        (f"/redirect-{code}", 422, "redirects are not followed")
        for code in (301, 302, 303, 307, 308)
    ]
    for path, status, phrase in cases:
        response = _register(files_server, path)
        assert response.status_code == status, (path, response.text)
        assert phrase in response.json()["detail"], (path, response.json()["detail"])
    wrong_name = _register(files_server, "/pool.jsonl", host="other-name.test")
    assert wrong_name.status_code == 422
    assert (
        "CERTIFICATE_VERIFY_FAILED" in wrong_name.json()["detail"]
        or "certificate" in wrong_name.json()["detail"].lower()
    )
    monkeypatch.setattr(https, "TOTAL_TIMEOUT_S", 1.5)
    slow = _register(files_server, "/slow.jsonl")
    assert slow.status_code == 422
    assert "took longer than 1.5 s" in slow.json()["detail"]
    assert "/redirect-302" in files_server["requested"]
    assert files_server["canary"].hits == []


def test_control_without_the_address_rules_the_canary_is_hit(
    remote_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canary and the guard really see a connection when the rules are switched off, so the
    zero above means the rules stopped every URL."""
    client, key, attempts = remote_env
    monkeypatch.setattr(network, "address_refusal", lambda address: None)
    with canary_listener() as canary:
        response = client.post(
            "/v1/datasets?wait=true",
            json={"uri": f"https://127.0.0.1:{canary.port}/pool.jsonl"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 422  # the canary hangs up: the download fails
        for _ in range(20):
            if canary.hits:
                break
            __import__("time").sleep(0.05)
        assert len(canary.hits) == 1, canary.hits
    assert attempts == ["127.0.0.1"]
