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
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, delete, event, insert, select, text
from sqlalchemy.engine import make_url

from serving.audit import schema

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


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created private (0700)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the page's view) never block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class AuditStore:
    """One audit database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
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
        """Run the migrations once per process, on first use."""
        if not self._migrated:
            self.migrate()

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
