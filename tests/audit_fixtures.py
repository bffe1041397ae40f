"""Audit test helpers: a throwaway PostgreSQL cluster, audit stores on SQLite and PostgreSQL.

The cluster is Debian's ``postgresql`` (``initdb``/``pg_ctl``) in a temporary folder, listening
on 127.0.0.1 at a random free port, run as the ``postgres`` user when the tests run as root
(PostgreSQL refuses root). Tests skip with the reason when the binaries are absent.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.audit.store import AuditStore


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """initdb + pg_ctl start in a temporary folder; :meth:`new_database` for isolation."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            pytest.skip(
                "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql"
            )
        self.pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="audit-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL")
            self.user = "postgres"
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        self.start()

    def _run(self, command: list[str]) -> None:
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([self.pg_ctl, "-D", str(self.data), "-o", options, "-w", "-l",
                   str(self.root / "log"), "start"])  # fmt: skip

    def stop(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"audit_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    yield cluster
    cluster.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request, tmp_path) -> str:
    """A fresh, empty audit database: a SQLite file, or a new database on the cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture
def store(audit_url) -> Iterator[AuditStore]:
    store = AuditStore(audit_url)
    store.migrate()
    yield store
    store.engine.dispose()


@pytest.fixture
def audit_env(monkeypatch, tmp_path) -> Path:
    """Point the apps' audit at a SQLite file under ``tmp_path`` (never the user's data dir)."""
    path = tmp_path / "audit-env" / "audit.sqlite"
    monkeypatch.setenv("TUMORLIB_AUDIT_URL", f"sqlite:///{path}")
    monkeypatch.setenv("TUMORLIB_AUDIT_SPOOL", str(tmp_path / "audit-env" / "spool.jsonl"))
    monkeypatch.delenv("TUMORLIB_AUDIT", raising=False)
    return path
