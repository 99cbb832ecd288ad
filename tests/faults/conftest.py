"""Fixtures of the fault tests: our own PostgreSQL and Redis, and per-test service stacks.

- `fault_servers` (session): a PostgreSQL cluster (initdb in a temporary folder, port 55432 or
  the next free one) with a migrated template database, and a Redis with AOF (port 56379 or next).
- `make_stack` (per test): a factory of Stacks (API + workers on a copy of the template database).

Long variants are marked `faults_long` and run only with TOV_FAULTS_LONG=1 (the benchmark does).
Keep the folders for a post-mortem with TOV_FAULTS_KEEP=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Servers, Stack
from tests.faults.servers import PG_BIN, REDIS_SERVER, PgCluster, RedisServer, scratch_dir

LONG = os.environ.get("TOV_FAULTS_LONG") == "1"
KEEP = os.environ.get("TOV_FAULTS_KEEP") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults_long: a long fault run (skipped unless TOV_FAULTS_LONG=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG:
        return
    skip = pytest.mark.skip(reason="long fault run: set TOV_FAULTS_LONG=1 (benchmarks/faults)")
    for item in items:
        if "faults_long" in item.keywords:
            item.add_marker(skip)


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


@pytest.fixture(scope="session")
def fault_servers() -> Iterator[Servers]:
    if not (PG_BIN / "initdb").exists() or not Path(REDIS_SERVER).exists():
        pytest.skip(f"needs PostgreSQL binaries in {PG_BIN} and redis-server")
    root = scratch_dir("tov-faults-")
    pg = PgCluster(root)
    redis = RedisServer(root)
    try:
        pg.init()
        pg.start()
        pg.create_database("tov_faults_template")
        from app.migrate import upgrade_database

        upgrade_database(pg.url("tov_faults_template"))
        redis.start()
        yield Servers(pg=pg, redis=redis, template="tov_faults_template")
    finally:
        redis.stop()
        pg.stop("fast")
        if KEEP:
            print(f"\nfault test servers' files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def make_stack(
    fault_servers: Servers, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []
    root = fault_servers.pg.root / request.node.name.replace("[", "_").replace("]", "")

    if not fault_servers.redis.ping():  # a previous test left it down
        fault_servers.redis.start()

    def factory(name: str, **settings: str) -> Stack:
        stack = Stack(fault_servers, root / name, name, **settings)
        stacks.append(stack)
        return stack

    yield factory
    failed = request.node.stash.get(FAILED, False)
    for stack in stacks:
        stack.stop()
        if failed:
            print(f"\n---- logs of stack {stack.name} ({stack.root})\n{stack.log_tails()}")
    if not fault_servers.redis.ping():
        fault_servers.redis.start()
