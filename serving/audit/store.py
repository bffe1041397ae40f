"""The audit database: engine, migrations (Alembic, shipped in the package), writes, purge.

Every write is an idempotent insert (the caller made the UUID primary key), so a batch retried
after a failure, or replayed from the spool, never duplicates a row. There is no update path;
the only delete is :meth:`AuditStore.purge`, which the append-only triggers allow only inside its
own transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Engine, Table, create_engine, delete, event, insert, select, text
from sqlalchemy.engine import make_url

from serving.audit import schema
from tumorlib.contracts.display import printable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
TABLES: dict[str, Table] = {
    "model": schema.models,
    "prediction": schema.predictions,
    "feedback": schema.feedback,
    "kept_image": schema.kept_images,
}
WRITE_ORDER = ("model", "prediction", "feedback", "kept_image")  # parents before children
PG_MIGRATION_LOCK = 7_341_952  # advisory lock key: one migrating process at a time
# Alembic's ``context``/``op`` proxies are module globals: one migration per process at a time.
_ALEMBIC_LOCK = threading.Lock()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class AuditDatabaseOutdated(RuntimeError):
    """A read-only report found a database whose schema is not the current one."""


class AuditDatabaseMissing(FileNotFoundError):
    """A report or purge was asked of a database that does not exist (it is never created)."""


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (``sqlite:///path`` or ``sqlite:///file:path?...&uri=true``);
    ``None`` for an in-memory database or another dialect."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    database = parsed.database
    if database == ":memory:" or "mode=memory" in str(parsed.query):
        return None
    if str(parsed.query.get("uri", "")).lower() == "true" and database.startswith("file:"):
        database = unquote(database[len("file:") :].split("?", 1)[0])
    return Path(database).expanduser()


def make_engine(url: str, *, read_only: bool = False, create: bool = True) -> Engine:
    """An engine for ``url``. ``create``: a SQLite file (and its private 0700 folder) may be
    made; otherwise a missing file is :class:`AuditDatabaseMissing`. ``read_only``: SQLite opens
    the file with ``mode=ro``, PostgreSQL runs every transaction read-only."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None and not path.exists():
            if not create:
                raise AuditDatabaseMissing(
                    f"there is no audit database at {printable(path)} (reports never create "
                    "one: check --url, or run `tumorlib audit migrate` to create it)"
                )
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if read_only and path is not None:
            target = f"file:{quote(str(path))}?mode=ro"
            engine = create_engine(
                "sqlite://", creator=lambda: sqlite3.connect(target, uri=True, timeout=30)
            )
            event.listen(engine, "connect", _sqlite_foreign_keys)
            return engine
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the page's view) never block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class AuditStore:
    """One audit database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, *, read_only: bool = False, create: bool = True) -> None:
        """``read_only``: reports — nothing is written, not even a migration; ``create``: a
        missing SQLite file may be created (writers and ``migrate``, never reports)."""
        self.url = url
        self.read_only = read_only
        self.engine = make_engine(url, read_only=read_only, create=create and not read_only)
        self._migrated = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- migrations ------------------------------------------------------------------------

    def _alembic(self, connection: Any) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def migrate(self, revision: str = "head") -> str | None:
        """Upgrade to ``revision``; returns the revision now current."""
        from alembic import command

        try:
            with _ALEMBIC_LOCK, self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(text(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
                command.upgrade(self._alembic(connection), revision)
        except Exception:
            # Another process (SQLite has no advisory lock) may have migrated at the same moment.
            if revision != "head" or self.current_revision() != self.head_revision():
                raise
        self._migrated = True
        return self.current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic(None)).get_current_head()

    def downgrade(self, revision: str = "base") -> str | None:
        from alembic import command

        with _ALEMBIC_LOCK, self.engine.begin() as connection:
            command.downgrade(self._alembic(connection), revision)
        self._migrated = False
        return self.current_revision()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def ensure_migrated(self) -> None:
        """Run the migrations once per process, on first use; a read-only store only checks
        that the database is at the current revision (a report never changes its schema)."""
        if self._migrated:
            return
        if self.read_only:
            current, head = self.current_revision(), self.head_revision()
            if current != head:
                raise AuditDatabaseOutdated(
                    f"the audit database is at revision {current or 'none (no tables)'}, not "
                    f"{head}: run `tumorlib audit migrate` first"
                )
            self._migrated = True
            return
        self.migrate()

    def record_count(self) -> int:
        """Rows in every audit table that exists (what a downgrade to base would drop)."""
        from sqlalchemy import func, inspect

        with self.engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
            return sum(
                int(connection.execute(select(func.count()).select_from(table)).scalar() or 0)
                for table in TABLES.values()
                if table.name in present
            )

    # -- writes ----------------------------------------------------------------------------

    def write(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Insert ``(kind, row)`` items in one transaction; rows already present are skipped."""
        self.ensure_migrated()
        grouped: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in WRITE_ORDER}
        for kind, row in items:
            grouped[kind].append(row)
        count = 0
        with self.engine.begin() as connection:
            for kind in WRITE_ORDER:
                if grouped[kind]:
                    connection.execute(
                        self._insert_ignoring_duplicates(TABLES[kind]), grouped[kind]
                    )
                    count += len(grouped[kind])
        return count

    def _insert_ignoring_duplicates(self, table: Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        return insert(table)

    # -- reads -----------------------------------------------------------------------------

    def rows(
        self, kind: str, *, before: dt.datetime | None = None, with_data: bool = False
    ) -> list[dict[str, Any]]:
        """Every row of one table (oldest first); image bytes only when ``with_data``."""
        self.ensure_migrated()
        table = TABLES[kind]
        columns = [c for c in table.c if with_data or c.name != "data"]
        query = select(*columns)
        time_column = table.c.get("created_at")
        if time_column is None:
            time_column = table.c.first_seen
        if before is not None:
            query = query.where(time_column < before)
        query = query.order_by(time_column, *table.primary_key.columns)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    # -- purge -----------------------------------------------------------------------------

    def purge(self, before: dt.datetime) -> dict[str, int]:
        """Delete predictions made before ``before`` with their feedback and kept images."""
        self.ensure_migrated()
        p, f, k = schema.predictions, schema.feedback, schema.kept_images
        old = select(p.c.id).where(p.c.created_at < before)
        counts: dict[str, int] = {}
        with self.engine.begin() as connection:
            connection.execute(insert(schema.purge_token).values(id=os.getpid()))
            for name, statement in (
                ("kept_images", delete(k).where(k.c.prediction_id.in_(old))),
                ("feedback", delete(f).where(f.c.prediction_id.in_(old))),
                ("predictions", delete(p).where(p.c.created_at < before)),
            ):
                counts[name] = connection.execute(statement).rowcount
            connection.execute(delete(schema.purge_token))
        log.info("audit purge before %s: %s", before.isoformat(), counts)
        return counts
