"""The audit database on SQLite and on a real PostgreSQL: migrations, append-only, the background
writer (20 concurrent threads, database down and back), purge, exports, and what a row holds."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from serving.audit import records, schema
from serving.audit.config import AuditSettings
from serving.audit.exports import export_dataset, export_records
from serving.audit.recorder import AuditLog, Input
from serving.audit.spool import Spool
from serving.audit.store import AuditStore
from serving.audit.writer import AuditWriter
from serving.clients.prediction import Prediction
from tests.fixtures import audit as audit_fixtures
from tumorlib.contracts.classes import CLASS_NAMES

# The shared fixtures (SQLite and a throwaway PostgreSQL cluster), by name.
audit_url = audit_fixtures.audit_url
postgres_cluster = audit_fixtures.postgres_cluster
store = audit_fixtures.store

MODEL = records.ModelInfo("brain_mri", 3, {"test_accuracy": 0.9})


def prediction(cls: int = 0, confidence: float = 0.7, **extra) -> Prediction:
    rest = (1 - confidence) / (len(CLASS_NAMES) - 1)
    probs = {n: (confidence if i == cls else rest) for i, n in enumerate(CLASS_NAMES)}
    return Prediction(probs, cls, CLASS_NAMES[cls], **extra)


def make_log(url: str, tmp_path, store: AuditStore | None = None) -> AuditLog:
    settings = AuditSettings(url=url, spool_path=tmp_path / "spool.jsonl", salt="s3cret")
    return AuditLog(settings, store=store)


def count(store: AuditStore, table: str) -> int:
    with store.engine.connect() as connection:
        return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_migrations_go_up_and_down_and_match_the_schema(audit_url):
    store = AuditStore(audit_url)
    assert store.migrate() == "0001"
    tables = set(inspect(store.engine).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= tables
    for table in schema.metadata.sorted_tables:
        shipped = {c["name"] for c in inspect(store.engine).get_columns(table.name)}
        assert shipped == {c.name for c in table.c}, table.name
    assert store.migrate() == "0001"  # idempotent: "on first use" may run it many times
    assert store.downgrade("base") is None
    assert not set(inspect(store.engine).get_table_names()) - {"alembic_version"}
    assert store.migrate() == "0001"
    store.engine.dispose()


def test_records_are_append_only_except_for_purge(store, tmp_path):
    audit = make_log(store.url, tmp_path, store)
    old = audit.record_prediction(prediction(), Input(b"x"), model=MODEL, backend="in-process",
                                  source="test")  # fmt: skip
    audit.feedback(old, "agree")
    assert audit.flush(20)
    for statement in (
        "UPDATE audit_predictions SET class_name = 'x'",
        "DELETE FROM audit_feedback",
    ):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as connection:
            connection.execute(text(statement))
    assert count(store, "audit_predictions") == 1 and count(store, "audit_feedback") == 1
    cutoff = records.utcnow()
    audit.record_prediction(prediction(), Input(b"y"), model=MODEL, backend="in-process",
                            source="test")  # fmt: skip
    assert audit.flush(20)
    assert store.purge(cutoff) == {"kept_images": 0, "feedback": 1, "predictions": 1}
    assert count(store, "audit_predictions") == 1
    assert count(store, "audit_purge_token") == 0
    audit.close()


def test_twenty_threads_lose_and_duplicate_nothing(store, tmp_path):
    audit = make_log(store.url, tmp_path, store)
    per_thread = 50
    ids: list[list[str]] = [[] for _ in range(20)]

    def work(i: int) -> None:
        for j in range(per_thread):
            data = f"{i}-{j}".encode()
            ids[i].append(audit.record_prediction(prediction(j % 4), Input(data), model=MODEL,
                                                  backend="in-process", source="test"))  # fmt: skip

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert audit.flush(60)
    rows = store.rows("prediction")
    assert len(rows) == 20 * per_thread
    assert {r["id"] for r in rows} == {x for chunk in ids for x in chunk}
    assert len({r["input_sha256"] for r in rows}) == 20 * per_thread
    audit.close()


class FlakyStore(AuditStore):
    """A store whose database is 'down' while ``down`` is set."""

    down = True

    def write(self, items):
        if self.down:
            raise OperationalError("INSERT ...", {"note": "secret"}, ConnectionRefusedError("down"))
        return super().write(items)


def test_database_down_the_prediction_goes_on_and_the_record_is_written_later(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    flaky = FlakyStore(url)
    writer = AuditWriter(flaky, Spool(tmp_path / "spool.jsonl"), retry_initial_s=0.05)
    row = records.prediction_row(prediction(), b"img", model=MODEL, backend="b", source="test")
    writer.submit("prediction", row)  # returns at once although the database is down
    assert not writer.flush(0.5)
    status = writer.status()
    assert not status.ok and "down" in status.last_error and "secret" not in status.last_error
    flaky.down = False
    assert writer.flush(10)
    assert writer.status().ok
    assert [r["id"] for r in flaky.rows("prediction")] == [row["id"]]
    writer.close()


def test_records_left_at_exit_are_spooled_and_replayed_by_the_next_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    flaky = FlakyStore(url)
    spool = Spool(tmp_path / "spool.jsonl")
    writer = AuditWriter(flaky, spool, retry_initial_s=0.05, retry_max_s=0.1)
    rows = [records.prediction_row(prediction(), bytes([i]), model=MODEL, backend="b",
                                   source="test") for i in range(3)]  # fmt: skip
    for row in rows:
        writer.submit("prediction", row)
    assert writer.close(0.3).spooled == 3
    assert oct((tmp_path / "spool.jsonl").stat().st_mode & 0o777) == "0o600"
    later = AuditWriter(AuditStore(url), Spool(tmp_path / "spool.jsonl"))  # the next run
    assert later.flush(10)
    later.close()
    assert sorted(r["id"] for r in AuditStore(url).rows("prediction")) == sorted(
        r["id"] for r in rows
    )
    assert len(spool) == 0


def test_postgres_down_then_back(postgres_cluster, tmp_path):
    url = postgres_cluster.new_database()
    store = AuditStore(url)
    store.migrate()
    audit = AuditLog(AuditSettings(url=url, spool_path=tmp_path / "spool.jsonl"), store=store)
    audit.writer._retry = (0.1, 0.5)
    postgres_cluster.stop()
    try:
        record_id = audit.record_prediction(prediction(), Input(b"z"), model=MODEL,
                                            backend="in-process", source="test")  # fmt: skip
        assert not audit.flush(2)
        assert audit.status().last_error
    finally:
        postgres_cluster.start()
    assert audit.flush(30)
    assert [r["id"] for r in store.rows("prediction")] == [record_id]
    audit.close()
    store.engine.dispose()


def _png_with_metadata() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "DOE^JANE")
    buffer = io.BytesIO()
    array = np.random.default_rng(0).integers(0, 255, (20, 30), np.uint8)
    Image.fromarray(array).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def test_no_record_column_holds_pixels_or_patient_tags(store, tmp_path):
    image = _png_with_metadata()
    audit = make_log(store.url, tmp_path, store)
    record_id = audit.record_prediction(
        prediction(), Input(image, frame=0, sop_uid="1.2.3.4"), model=MODEL, backend="in-process",
        source="test", user="dr@example.org",
    )  # fmt: skip
    audit.keep_image(record_id, image)
    assert audit.flush(20)
    (row,) = store.rows("prediction")
    binary = [c.name for t in (schema.predictions, schema.feedback, schema.models) for c in t.c
              if c.type.python_type is bytes]  # fmt: skip
    assert binary == []
    for key, value in row.items():
        assert not isinstance(value, bytes), key
        assert len(str(value)) < 400, key
        assert "DOE" not in str(value) and "1.2.3.4" not in str(value), key
    assert row["input_sha256"] == records.sha256_hex(image) and row["input_bytes"] == len(image)
    assert row["sop_uid_hash"] == records.sop_uid_hash("1.2.3.4", "s3cret")
    (kept,) = store.rows("kept_image", with_data=True)
    assert b"DOE" not in kept["data"]
    kept_pixels = np.asarray(Image.open(io.BytesIO(kept["data"])))
    assert np.array_equal(kept_pixels, np.asarray(Image.open(io.BytesIO(image))))
    audit.close()


def test_export_records_and_the_confirmed_dataset_folder(store, tmp_path):
    audit = make_log(store.url, tmp_path, store)
    image = _png_with_metadata()
    agreed = audit.record_prediction(prediction(0), Input(b"a"), model=MODEL, backend="b",
                                     source="test")  # fmt: skip
    corrected = audit.record_prediction(prediction(0), Input(b"b"), model=MODEL, backend="b",
                                        source="test")  # fmt: skip
    unsure = audit.record_prediction(prediction(1), Input(b"c"), model=MODEL, backend="b",
                                     source="test")  # fmt: skip
    not_kept = audit.record_prediction(prediction(2), Input(b"d"), model=MODEL, backend="b",
                                       source="test")  # fmt: skip
    audit.feedback(agreed, "agree")
    audit.feedback(corrected, "agree")
    audit.feedback(corrected, "disagree", corrected_class="pituitary", note="changed my mind")
    audit.feedback(unsure, "not_assessable")
    audit.feedback(not_kept, "agree")
    for record_id in (agreed, corrected, unsure):
        audit.keep_image(record_id, image)
    assert audit.flush(20)
    counts = export_dataset(store, tmp_path / "ds")
    assert counts == {"glioma": 1, "meningioma": 0, "no_tumor": 0, "pituitary": 1}
    assert (tmp_path / "ds" / "train" / "glioma" / f"{agreed}.png").is_file()
    assert (tmp_path / "ds" / "train" / "pituitary" / f"{corrected}.png").is_file()
    manifest = (tmp_path / "ds" / "manifest.csv").read_text()
    assert "changed my mind" not in manifest and unsure not in manifest
    exported = export_records(store, tmp_path / "export")
    assert exported == {"predictions.csv": 4, "feedback.csv": 5, "models.json": 1}
    models = json.loads((tmp_path / "export" / "models.json").read_text())
    assert models[0]["model_version"] == 3
    future = records.utcnow() + dt.timedelta(days=1)
    assert export_records(store, tmp_path / "e2", before=future)["predictions.csv"] == 4
    audit.close()
