"""Where the audit database lives and how long records are kept, from env or the page's secrets.

Why a user data dir: the audit file must outlive a checkout and never be committed, so the
default is ``$XDG_DATA_HOME/tumorlib/audit.sqlite`` (``~/.local/share/tumorlib/audit.sqlite``),
never a path inside the repository. PostgreSQL is chosen by URL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_URL = "TUMORLIB_AUDIT_URL"
ENV_ENABLED = "TUMORLIB_AUDIT"  # "off" disables recording
ENV_RETENTION = "TUMORLIB_AUDIT_RETENTION_DAYS"
ENV_SALT = "TUMORLIB_AUDIT_SALT"  # for the optional salted hash of a DICOM SOP Instance UID
ENV_SPOOL = "TUMORLIB_AUDIT_SPOOL"
SECRET_URL = "audit_url"
SECRET_ENABLED = "audit"
SECRET_RETENTION = "audit_retention_days"
SECRET_SALT = "audit_salt"
DEFAULT_RETENTION_DAYS = 3650  # ten years: a typical medical-record retention; set yours


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/tumorlib`` (default ``~/.local/share/tumorlib``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tumorlib"


def default_url(environ: Mapping[str, str] | None = None) -> str:
    return f"sqlite:///{data_dir(environ) / 'audit.sqlite'}"


@dataclass(frozen=True)
class AuditSettings:
    """What the recorder needs: the database URL, whether to record, retention, salt."""

    url: str
    enabled: bool = True
    retention_days: int = DEFAULT_RETENTION_DAYS
    salt: str | None = None
    spool_path: Path | None = None  # where records wait when the database is down

    @property
    def spool(self) -> Path:
        """One spool per database, so waiting records replay into the database they were for."""
        if self.spool_path is not None:
            return self.spool_path
        import hashlib

        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        return data_dir() / f"audit-spool-{digest}.jsonl"

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


def resolve(
    secrets: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> AuditSettings:
    """Secrets (the page's ``secrets.toml``) first, then the environment, then defaults."""
    secrets = secrets or {}
    env = os.environ if environ is None else environ

    def pick(secret: str, key: str) -> str | None:
        value = secrets.get(secret)
        value = env.get(key) if value is None or value == "" else value
        return None if value is None or str(value).strip() == "" else str(value).strip()

    enabled = (pick(SECRET_ENABLED, ENV_ENABLED) or "on").lower() not in ("off", "0", "false")
    retention = pick(SECRET_RETENTION, ENV_RETENTION)
    try:
        days = int(retention) if retention else DEFAULT_RETENTION_DAYS
    except ValueError:
        raise ValueError(f"audit retention must be a number of days, not {retention!r}") from None
    spool = env.get(ENV_SPOOL)
    return AuditSettings(
        url=pick(SECRET_URL, ENV_URL) or default_url(env),
        enabled=enabled,
        retention_days=days,
        salt=pick(SECRET_SALT, ENV_SALT),
        spool_path=Path(spool) if spool else None,
    )
