"""The audit tables: models, predictions, feedback, kept images; append-only triggers.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("audit_models", "audit_predictions", "audit_feedback", "audit_kept_images")
MESSAGE = "audit records are append-only; use `tumorlib audit purge --before DATE`"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "audit_models",
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.Integer, primary_key=True),
        sa.Column("first_seen", tz, nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_predictions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", tz, nullable=False, index=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=True, index=True),
        sa.Column("backend", sa.String(300), nullable=False),
        sa.Column("user", sa.String(200), nullable=True),
        sa.Column("input_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("input_bytes", sa.Integer, nullable=False),
        sa.Column("frame", sa.Integer, nullable=True),
        sa.Column("sop_uid_hash", sa.String(64), nullable=True),
        sa.Column("class_name", sa.String(32), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("probabilities", sa.Text, nullable=False),
        sa.Column("abstain", sa.Boolean, nullable=True),
        sa.Column("in_distribution", sa.Boolean, nullable=True),
        sa.Column("gate_score", sa.Float, nullable=True),
        sa.Column("tumorlib_version", sa.String(32), nullable=False),
    )
    for name, extra in (
        (
            "audit_feedback",
            [
                sa.Column("verdict", sa.String(16), nullable=False),
                sa.Column("corrected_class", sa.String(32), nullable=True),
                sa.Column("note", sa.String(1000), nullable=True),
            ],
        ),
        (
            "audit_kept_images",
            [
                sa.Column("consent", sa.String(200), nullable=False),
                sa.Column("media_type", sa.String(32), nullable=False),
                sa.Column("data", sa.LargeBinary, nullable=False),
            ],
        ),
    ):
        op.create_table(
            name,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column(
                "prediction_id",
                sa.String(36),
                sa.ForeignKey("audit_predictions.id"),
                nullable=False,
                index=True,
            ),
            sa.Column("created_at", tz, nullable=False),
            sa.Column("user", sa.String(200), nullable=True),
            *extra,
        )
    # A purge inserts a row here inside its own transaction; only then may rows be deleted.
    op.create_table("audit_purge_token", sa.Column("id", sa.Integer, primary_key=True))
    _append_only_triggers()


def _append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_append_only() RETURNS trigger AS $$ BEGIN "
            "IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_purge_token) THEN "
            "RETURN OLD; END IF; "
            f"RAISE EXCEPTION '{MESSAGE}'; END $$ LANGUAGE plpgsql"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
            )
        return
    for table in TABLES:  # SQLite
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            "WHEN NOT EXISTS (SELECT 1 FROM audit_purge_token) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    for table in ("audit_purge_token", "audit_kept_images", "audit_feedback"):
        op.drop_table(table)
    op.drop_table("audit_predictions")
    op.drop_table("audit_models")
