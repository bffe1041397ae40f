"""``tumorlib audit``: migrate, performance, drift, export, purge, dataset; and the batch hook.

Why a command: months later a hospital asks what the model said, how often radiologists agreed
and whether inputs drifted; this answers from the audit database alone (docs/audit.md). The batch
CLI records through :func:`record_batch` (``tumorlib predict`` calls it), the same
:class:`serving.audit.AuditLog` the page uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from serving.audit import AuditLog, Input, resolve
from serving.audit.store import AuditDatabaseMissing, AuditDatabaseOutdated, AuditStore
from tumorlib.contracts.cli import CommandError, run_command
from tumorlib.contracts.display import printable, safe_url, without_credentials

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 10.0


# -- the batch CLI's hook ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``tumorlib predict``'s audit flags."""
    parser.add_argument("--no-audit", action="store_true", help="do not write audit records")
    parser.add_argument(
        "--audit-sop-uid",
        action="store_true",
        help="also record a salted hash of each DICOM's SOP Instance UID (needs "
        "TUMORLIB_AUDIT_SALT)",
    )


def _sop_uid(path: str) -> str | None:
    """The SOP Instance UID alone (no other tag is read)."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except Exception:  # noqa: BLE001 - no UID, no hash; the record is still written
        return None
    uid = dataset.get("SOPInstanceUID")
    return str(uid) if uid else None


def batch_inputs(items: list[Any], predictions: list[Any], *, sop_uid: bool) -> list[tuple]:
    """(prediction, Input) for each answered item; DICOM inputs hashed as the file on disk."""
    from tumorlib.inputs.dicom import DICOM_SUFFIXES

    files: dict[str, bytes] = {}
    answered = []
    for item, prediction in zip(items, predictions):
        if prediction is None or item.data is None:
            continue
        frame = item.frame if isinstance(item.frame, int) else None
        data, uid = item.data, None
        if frame is not None or item.path.lower().endswith(DICOM_SUFFIXES):
            if item.path not in files:
                files[item.path] = Path(item.path).read_bytes()
            data = files[item.path]
            uid = _sop_uid(item.path) if sop_uid else None
        answered.append((prediction, Input(data, frame, uid)))
    return answered


def record_batch(
    args: argparse.Namespace, backend: Any, items: list, predictions: list
) -> list[str] | None:
    """Record every answered item; a database problem is a warning, never a failed batch.

    Returns the record ids, one per answered item in order (for the PDF reports), or None.
    """
    try:
        settings = resolve()
        if getattr(args, "no_audit", False) or not settings.enabled:
            return None
        if getattr(args, "audit_sop_uid", False) and not settings.salt:
            log.warning("--audit-sop-uid needs TUMORLIB_AUDIT_SALT; SOP UIDs not recorded")
        answered = batch_inputs(items, predictions, sop_uid=getattr(args, "audit_sop_uid", False))
        audit = AuditLog(settings)
        ids = audit.record(backend, None, answered, source="cli")
        status = audit.close(FLUSH_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - the CSV matters more than its audit record
        log.warning("audit record not written (%s)", type(err).__name__)
        return None
    if status.spooled:
        log.warning(
            "audit database %s unreachable (%s): %d record(s) kept in %s, written on next use",
            settings.safe_url, status.last_error, status.spooled, settings.spool,
        )  # fmt: skip
    return list(ids)


# -- tumorlib audit ------------------------------------------------------------------------------


def parse_date(text: str) -> dt.datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO timestamp; naive means UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib audit",
        description="The audit database: predictions, radiologists' feedback, live performance.",
    )
    parser.add_argument("--url", help="database URL (default: TUMORLIB_AUDIT_URL, else SQLite)")
    sub = parser.add_subparsers(dest="action", required=True)
    migrate = sub.add_parser("migrate", help="create or upgrade the tables (Alembic)")
    migrate.add_argument("--revision", default="head")
    migrate.add_argument("--down", action="store_true", help="downgrade to --revision instead")
    migrate.add_argument(
        "--yes-delete-records",
        action="store_true",
        help="allow a downgrade that drops tables holding records (they are gone for good)",
    )
    perf = sub.add_parser("performance", help="agreement, recall, refer rate per version")
    perf.add_argument("--output-dir", type=Path, help="write reliability PNGs and performance.json")
    perf.add_argument("--seed", type=int, default=0)
    drift = sub.add_parser("drift", help="gate scores and confidences vs validation (KS test)")
    drift.add_argument("--period", choices=("day", "week"), default="week")
    export = sub.add_parser("export", help="predictions and feedback as CSV (no images)")
    export.add_argument("--before", type=parse_date)
    export.add_argument("--output", type=Path, required=True)
    purge = sub.add_parser("purge", help="delete records made before a date")
    purge.add_argument("--before", type=parse_date, help="default: now minus the retention")
    dataset = sub.add_parser("dataset", help="confirmed kept images as a TFDS ImageFolder")
    dataset.add_argument("--output", type=Path, required=True)
    dataset.add_argument("--split", default="train")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args))


# Reports read: their database is opened read-only and never created or migrated.
READ_ONLY_ACTIONS = frozenset({"performance", "drift", "export", "dataset"})


def run(args: argparse.Namespace) -> int:
    settings = resolve()
    url = args.url or settings.url
    from tumorlib_cli import audit_report

    try:
        store = AuditStore(
            url,
            read_only=args.action in READ_ONLY_ACTIONS,
            create=args.action == "migrate" and not args.down,
        )
        if args.action == "migrate":
            return migrate(store, args)
        store.ensure_migrated()
        return audit_report.ACTIONS[args.action](store, args, settings)
    except (CommandError, NotADirectoryError):
        raise
    except (AuditDatabaseMissing, AuditDatabaseOutdated) as err:
        raise CommandError(f"audit database: {err}") from None
    except Exception as err:
        from serving.audit.writer import describe_error

        if type(err).__module__.startswith(("sqlalchemy", "psycopg", "sqlite3")):
            shown = without_credentials(printable(describe_error(err)), url)
            raise CommandError(f"audit database: {shown} (at {safe_url(url)})") from None
        raise


def migrate(store: AuditStore, args: argparse.Namespace) -> int:
    """Upgrade, or downgrade — which drops the tables of later revisions, with their records:
    refused while any record exists unless ``--yes-delete-records`` says so."""
    if args.down:
        held = store.record_count()
        if held and not args.yes_delete_records:
            raise CommandError(
                f"downgrading to revision {args.revision} drops tables holding {held} record(s) "
                "(predictions, feedback, kept images, models); they cannot be recovered. Export "
                "them first (tumorlib audit export), then pass --yes-delete-records."
            )
        print(f"audit database at revision {store.downgrade(args.revision)}")
        return 0
    print(f"audit database at revision {store.migrate(args.revision)}")
    return 0


def dump(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
