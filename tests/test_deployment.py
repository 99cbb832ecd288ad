"""The production stack as written: compose file, images, lock files (no Docker engine here).

docker-compose.yml is read as YAML and, where Debian's docker-compose is installed (CI installs it),
validated with `docker-compose config`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("POSTGRES_PASSWORD", "TOV_METRICS_TOKEN", "MINIO_ROOT_PASSWORD")
ARTIFACTS = "/var/lib/tov/artifacts"


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in reservations.get("devices", []) if "gpu" in d.get("capabilities", [])]


def test_secrets_have_no_default() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not used in docker-compose.yml"
        assert all(use.startswith(":?") for use in uses), f"{name} has a default: {uses}"


def test_metrics_token_reaches_the_api() -> None:
    assert "TOV_METRICS_TOKEN" in compose()["services"]["api"]["environment"]


def test_one_gpu_per_worker_service() -> None:
    services = compose()["services"]
    gpu_services = {name: gpu_devices(s) for name, s in services.items() if gpu_devices(s)}
    assert gpu_services, "no service reserves a GPU"
    claimed: list[str] = []
    for name, devices in gpu_services.items():
        assert len(devices) == 1 and "count" not in devices[0], f"{name}: name one device"
        ids = devices[0].get("device_ids", [])
        assert len(ids) == 1, f"{name} must be pinned to exactly one GPU (device_ids), got {ids}"
        claimed += ids
    assert len(claimed) == len(set(claimed)), f"two worker services share a GPU: {claimed}"


def test_images_create_the_artifact_folder_for_their_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    base = dockerfile.split("FROM base AS source")[0]
    assert f"mkdir -p {ARTIFACTS}" in base
    assert re.search(r"chown -R tov:tov /var/lib/tov\b", base)
    for stage in ("api", "worker"):
        body = dockerfile.split(f"FROM base AS {stage}")[1].split("\nFROM ")[0]
        assert "USER tov" in body
        assert f"--require-hashes -r requirements/{stage}.lock" in body


def test_images_copy_every_package_the_services_import() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("app", "worker", "tov_engine", "tov_formats", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_build_context_leaves_out_local_state() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".cache", ".tov", "**/__pycache__", ".env"):
        assert path in ignored


def pinned(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in found}


@pytest.mark.parametrize(("lock", "extras"), [("api", ()), ("worker", ("engine",))])
def test_lock_files_pin_every_dependency(lock: str, extras: tuple[str, ...]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    versions = pinned(REPO / "requirements" / f"{lock}.lock")
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in versions, f"{name} is not in requirements/{lock}.lock (run `make lock`)"
        assert requirement.specifier.contains(versions[name], prereleases=True), (
            f"requirements/{lock}.lock pins {name}=={versions[name]}, outside {requirement}"
        )
    assert ("torch" in versions) == ("engine" in extras)


def docker_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs docker-compose (.ci/run); it is missing")
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose)")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [binary, "config", "-q"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_is_valid_with_the_secrets() -> None:
    done = docker_compose_config({name: "s3cret" for name in SECRETS})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_a_secret(missing: str) -> None:
    done = docker_compose_config({name: "s3cret" for name in SECRETS if name != missing})
    assert done.returncode != 0
    assert f"set {missing}" in done.stderr
