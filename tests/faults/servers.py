"""Throw-away PostgreSQL and Redis servers that fault tests may break (RELIABILITY.md).

Both live under one temporary folder, listen on 127.0.0.1 only, on ports of their own (55432 and
56379 by default, the next free port when taken), and are stopped by their data folder or PID. The
shared servers on 5432 and 6379 are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("TOV_FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # initdb refuses root; the cluster's files belong to this OS user
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SHARED_PORTS = {5432, 6379}  # the machine's own servers: never ours to break


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    for port in range(preferred, preferred + 200):
        if port not in SHARED_PORTS and port_free(port):
            return port
    raise RuntimeError(f"no free port from {preferred}")


def scratch_dir(prefix: str) -> Path:
    """A temporary folder the postgres user can enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _as_pg_user(*args: str) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *args]
    return list(args)


class PgCluster:
    """A PostgreSQL cluster of our own: initdb on a temporary folder, pg_ctl on its own port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.run = root / "pgrun"  # socket and log, writable by the postgres user
        self.port = port or pick_port(int(os.environ.get("TOV_FAULTS_PG_PORT", "55432")))
        self.admin_dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            _as_pg_user(str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args),
            check=check,
            capture_output=True,
            timeout=60,
        )

    def init(self) -> None:
        for folder in (self.data, self.run):
            folder.mkdir()
            if os.geteuid() == 0:
                shutil.chown(folder, PG_USER, PG_USER)
        subprocess.run(
            _as_pg_user(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.run} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._pg_ctl("-l", str(self.run / "postgres.log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` (clean) or `immediate` (like a crash: recovery at the next start)."""
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, down_seconds: float = 0.0, mode: str = "immediate") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.run / "postgres.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class RedisServer:
    """A Redis of our own with AOF, restartable (same data) or wipeable (data lost)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.dir = root / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = port or pick_port(int(os.environ.get("TOV_FAULTS_REDIS_PORT", "56379")))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 20) -> None:
        self.starts += 1
        log = (self.dir.parent / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9 by PID (the AOF keeps what was written; nothing is flushed on the way out)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def wipe(self) -> None:
        """Remove every file of the (stopped) server: queued messages are gone for good."""
        assert self.process is None or self.process.poll() is not None, "stop Redis first"
        shutil.rmtree(self.dir)
        self.dir.mkdir()
