"""The one entry point both apps (and a future study path) record through: :class:`AuditLog`.

It turns a backend's predictions into rows (:mod:`serving.audit.records`) and hands them to the
background writer, so recording costs a hash and a queue put per image. Record ids are made here,
before the write, so the page can attach feedback to a record the database has not seen yet.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.audit import records
from serving.audit.config import AuditSettings
from serving.audit.records import ModelInfo
from serving.audit.spool import Spool
from serving.audit.store import AuditStore
from serving.audit.writer import AuditWriter, WriterStatus
from serving.clients.backend import Backend, RestBackend
from serving.clients.prediction import Prediction

log = logging.getLogger(__name__)

IN_PROCESS = "in-process"


@dataclass(frozen=True)
class Input:
    """One answered image as the audit sees it: its bytes (hashed only), frame, SOP UID."""

    data: bytes
    frame: int | None = None
    sop_uid: str | None = None  # only hashed, and only when a salt is configured


def backend_name(backend: Backend) -> str:
    """``in-process`` or the REST base URL (without credentials)."""
    if isinstance(backend, RestBackend):
        return str(backend.client.display_url)
    return IN_PROCESS


class AuditLog:
    """Records predictions, feedback and kept images in the background; never raises on write."""

    def __init__(self, settings: AuditSettings, store: AuditStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self.writer = AuditWriter(self._get_store, Spool(settings.spool))
        self._models: dict[tuple[str, int | None], ModelInfo] = {}
        self._seen_models: set[tuple[str, int | None]] = set()
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _get_store(self) -> AuditStore:
        if self._store is None:
            self._store = AuditStore(self.settings.url)
        return self._store

    @property
    def store(self) -> AuditStore:
        return self._get_store()

    # -- predictions -----------------------------------------------------------------------

    def model_for(self, backend: Backend, version: int | None) -> ModelInfo:
        """Name and version from the served metadata (cached per backend and version)."""
        key = (backend.label, version)
        with self._lock:
            if key in self._models:
                return self._models[key]
        try:
            metadata: Mapping[str, Any] = backend.metadata(version)
        except Exception as err:  # noqa: BLE001 - recorded without a reference; never fails
            log.warning("audit: model metadata unavailable (%s)", type(err).__name__)
            metadata = {"model_version": version}
        name = getattr(getattr(backend, "client", None), "model_name", None) or "brain_mri"
        info = records.model_info(metadata, name)
        with self._lock:
            self._models[key] = info
        return info

    def record(
        self,
        backend: Backend,
        version: int | None,
        answered: Sequence[tuple[Prediction, Input]],
        *,
        source: str,
        user: str | None = None,
    ) -> list[str]:
        """Queue one record per answered image; returns their ids (in order)."""
        if not answered:
            return []
        model = self.model_for(backend, version)
        return [
            self.record_prediction(
                prediction,
                item,
                model=model,
                backend=backend_name(backend),
                source=source,
                user=user,
            )  # fmt: skip
            for prediction, item in answered
        ]

    def record_prediction(
        self,
        prediction: Prediction,
        item: Input,
        *,
        model: ModelInfo,
        backend: str,
        source: str,
        user: str | None = None,
    ) -> str:
        """One record, for callers without a :class:`Backend` (e.g. a future study path)."""
        self._note_model(model)
        sop_hash = None
        if item.sop_uid and self.settings.salt:
            sop_hash = records.sop_uid_hash(item.sop_uid, self.settings.salt)
        row = records.prediction_row(
            prediction, item.data, model=model, backend=backend, source=source, user=user,
            frame=item.frame, sop_hash=sop_hash,
        )  # fmt: skip
        self.writer.submit("prediction", row)
        return str(row["id"])

    def _note_model(self, model: ModelInfo) -> None:
        key = (model.name, model.version)
        with self._lock:
            if key in self._seen_models:
                return
            self._seen_models.add(key)
        self.writer.submit("model", records.model_row(model))

    # -- feedback and kept images ------------------------------------------------------------

    def feedback(self, prediction_id: str, verdict: str, **details: Any) -> str:
        """Queue a radiologist's verdict (see :func:`records.feedback_row`); returns its id."""
        row = records.feedback_row(prediction_id, verdict, **details)
        self.writer.submit("feedback", row)
        return str(row["id"])

    def keep_image(self, prediction_id: str, data: bytes, *, user: str | None = None) -> str:
        """Store an input's pixels for retraining: call only after the user's explicit consent."""
        row = records.kept_image_row(prediction_id, data, user=user)
        self.writer.submit("kept_image", row)
        return str(row["id"])

    # -- state -----------------------------------------------------------------------------

    def status(self) -> WriterStatus:
        return self.writer.status()

    def flush(self, timeout: float = 10.0) -> bool:
        return self.writer.flush(timeout)

    def close(self, timeout: float = 5.0) -> WriterStatus:
        return self.writer.close(timeout)
