"""The audit tables (SQLAlchemy Core). The Alembic migrations under ``migrations/`` create them.

What is stored, and why nothing more (docs/audit.md): hashes and sizes of inputs, never pixels
or DICOM tags; the model's outputs; who asked (the signed-in user, when there is one). Image
bytes live only in ``audit_kept_images``, and only for inputs a user chose to keep, with consent.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

VERDICTS = ("agree", "disagree", "not_assessable")
SOURCES = ("page", "cli", "study", "bench", "test")
NOTE_MAX_CHARS = 1000

models = Table(
    "audit_models",
    metadata,
    Column("model_name", String(200), primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    # JSON text: the export's clean-test metrics, abstention threshold and validation reference.
    Column("reference", Text, nullable=False),
)

predictions = Table(
    "audit_predictions",
    metadata,
    Column("id", String(36), primary_key=True),  # a UUID made by the caller, before the write
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("source", String(16), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("model_version", Integer, nullable=True, index=True),
    Column("backend", String(300), nullable=False),  # "in-process" or the REST base URL
    Column("user", String(200), nullable=True),
    Column("input_sha256", String(64), nullable=False, index=True),
    Column("input_bytes", Integer, nullable=False),
    Column("frame", Integer, nullable=True),  # DICOM frame classified
    Column("sop_uid_hash", String(64), nullable=True),  # HMAC-SHA256, only when asked
    Column("class_name", String(32), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("probabilities", Text, nullable=False),  # JSON {class name: probability}
    Column("abstain", Boolean, nullable=True),
    Column("in_distribution", Boolean, nullable=True),
    Column("gate_score", Float, nullable=True),
    Column("tumorlib_version", String(32), nullable=False),
)

feedback = Table(
    "audit_feedback",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("prediction_id", String(36), ForeignKey(predictions.c.id), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("user", String(200), nullable=True),
    Column("verdict", String(16), nullable=False),  # one of VERDICTS
    Column("corrected_class", String(32), nullable=True),  # with "disagree"
    Column("note", String(NOTE_MAX_CHARS), nullable=True),
)

kept_images = Table(
    "audit_kept_images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("prediction_id", String(36), ForeignKey(predictions.c.id), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("user", String(200), nullable=True),
    Column("consent", String(200), nullable=False),  # the consent wording the user ticked
    Column("media_type", String(32), nullable=False),
    Column("data", LargeBinary, nullable=False),  # pixels re-encoded as PNG, no metadata
)

# A purge inserts a row here inside its own transaction; the append-only triggers then allow
# deletes (migrations/versions/0001_initial.py).
purge_token = Table("audit_purge_token", metadata, Column("id", Integer, primary_key=True))

# Child tables first: the order a purge deletes in.
APPEND_ONLY = ("audit_kept_images", "audit_feedback", "audit_predictions", "audit_models")
