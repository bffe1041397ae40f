"""A hospital PACS over DICOMweb: find a study (QIDO-RS), fetch a series (WADO-RS), classify it,
store the SR and the Grad-CAM captures back into the same study (STOW-RS).

Why DICOMweb: every current PACS (Orthanc, dcm4chee-arc, Google/Azure/AWS health imaging) speaks
it over plain HTTPS, so no DIMSE port, AE title or firewall rule is needed. A thin layer over
:class:`dicomweb_client.api.DICOMwebClient`: HTTP basic auth, timeouts, the input policy's study
limits checked before anything is retrieved, and failures in words. See ``docs/pacs.md``.

Privacy: retrieved instances stay in memory; study summaries leave patient attributes out unless a
caller asks; nothing here logs a header value (dicomweb-client's own INFO log, which names UIDs
and URLs, is turned down to warnings).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from serving.clients.backend import Backend
from serving.clients.study import classify_series
from serving.pacs.capture import make_secondary_captures
from serving.pacs.results import overlays_for
from serving.pacs.sr import make_structured_report
from tumorlib.inputs import policy, study_policy
from tumorlib.studies.readers import read_series
from tumorlib.studies.study import StudyResult

USER_ENV = "TUMORLIB_PACS_USER"
PASSWORD_ENV = "TUMORLIB_PACS_PASSWORD"
DEFAULT_TIMEOUT_S = 30.0
IMAGE_MODALITY = "MR"
IDENTIFYING_STUDY_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
STUDY_FIELDS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries")
SERIES_FIELDS = ("Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances")

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)


class PacsError(RuntimeError):
    """A PACS failure in words for the user (refused credentials, unreachable, not found)."""


@dataclass(frozen=True)
class StudySummary:
    """One study as QIDO-RS reports it; ``patient`` only when a caller asked for it."""

    study_uid: str
    description: str
    modalities: tuple[str, ...]
    n_series: int | None
    patient: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a study: what is needed to pick the MR series to classify."""

    series_uid: str
    modality: str
    description: str
    number: int | None
    n_instances: int | None


@dataclass
class SeriesReport:
    """What happened to one series: its verdict and the results stored (SOP instance UIDs)."""

    series_uid: str
    description: str
    result: StudyResult = field(repr=False)
    stored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # Grad-CAM missing, series warnings


def _credentials(user: str | None, password: str | None) -> tuple[str, str] | None:
    user = user if user is not None else os.environ.get(USER_ENV)
    password = password if password is not None else os.environ.get(PASSWORD_ENV)
    if not user and not password:
        return None
    return user or "", password or ""


class Pacs:
    """One DICOMweb service root (e.g. ``http://orthanc:8042/dicom-web``)."""

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """``user``/``password`` default to ``$TUMORLIB_PACS_USER``/``$TUMORLIB_PACS_PASSWORD``."""
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = _credentials(user, password)
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout_s)

    # -- QIDO-RS ---------------------------------------------------------------------------------

    def find_studies(
        self,
        *,
        patient_id: str | None = None,
        accession_number: str | None = None,
        modality: str | None = None,
        limit: int = 50,
        identifying: bool = False,
    ) -> list[StudySummary]:
        """Studies matching the filters; patient attributes only with ``identifying=True``."""
        filters = {
            key: value
            for key, value in (
                ("PatientID", patient_id),
                ("AccessionNumber", accession_number),
                ("ModalitiesInStudy", modality),
            )
            if value
        }
        fields = STUDY_FIELDS + (IDENTIFYING_STUDY_FIELDS if identifying else ())
        with self._call("search for studies"):
            found = self.client.search_for_studies(
                search_filters=filters, fields=list(fields), limit=limit
            )
        return [_study_summary(Dataset.from_json(item), identifying) for item in found]

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        """The series of one study, in series-number order."""
        with self._call(f"list the series of study {study_uid}"):
            found = self.client.search_for_series(study_uid, fields=list(SERIES_FIELDS))
        summaries = [_series_summary(Dataset.from_json(item)) for item in found]
        return sorted(summaries, key=lambda s: (s.number is None, s.number or 0, s.series_uid))

    # -- WADO-RS ---------------------------------------------------------------------------------

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        *,
        max_instances: int = study_policy.MAX_STUDY_FILES,
        max_bytes: int = study_policy.MAX_STUDY_BYTES,
    ) -> list[tuple[str, bytes]]:
        """The series' instances as ``(name, DICOM file bytes)``, in memory, within the limits.

        The instance count is checked from QIDO-RS before anything is retrieved; the count and
        the bytes again while the instances stream in (a server's count may be stale).
        """
        known = {s.series_uid: s for s in self.list_series(study_uid)}
        if series_uid not in known:
            raise PacsError(f"Study {study_uid} has no series {series_uid} at {self.url}.")
        files: list[tuple[str, bytes]] = []
        total = 0
        try:
            if known[series_uid].n_instances is not None:
                study_policy.check_study_files(
                    known[series_uid].n_instances, max_files=max_instances
                )
            with self._call(f"retrieve series {series_uid}"):
                for ds in self.client.iter_series(study_uid, series_uid):
                    data = _encode(ds)
                    total += len(data)
                    study_policy.check_study_files(len(files) + 1, max_files=max_instances)
                    study_policy.check_study_bytes(total, max_bytes=max_bytes)
                    files.append((f"{ds.SOPInstanceUID}.dcm", data))
        except policy.InputRejected as err:
            raise PacsError(f"Series {series_uid} is not retrieved: {err.message}") from None
        return files

    # -- STOW-RS ---------------------------------------------------------------------------------

    def store(self, datasets: Sequence[Dataset]) -> list[str]:
        """Store ``datasets`` (one study); the SOP instance UIDs the PACS accepted."""
        if not datasets:
            return []
        study_uid = str(datasets[0].StudyInstanceUID)
        with self._call(f"store results in study {study_uid}"):
            answer = self.client.store_instances(list(datasets), study_uid)
        failed = answer.get("FailedSOPSequence") or []
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise PacsError(
                f"The PACS at {self.url} refused {len(failed)} of {len(datasets)} result "
                f"instances (failure reason {', '.join(reasons)})."
            )
        return [
            str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence", [])
        ]

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """HTTP and connection failures as :class:`PacsError`, in words."""
        try:
            yield
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            anonymous = self.session.auth is None
            raise PacsError(_http_message(self.url, what, status, anonymous)) from None
        except requests.Timeout:
            raise PacsError(f"The PACS at {self.url} did not answer in time ({what}).") from None
        except requests.ConnectionError:
            raise PacsError(
                f"Cannot reach the PACS at {self.url} ({what}): is the URL right and the server up?"
            ) from None


def _http_message(url: str, what: str, status: int | None, anonymous: bool) -> str:
    if status == 401 and anonymous:
        return (
            f"The PACS at {url} requires credentials (HTTP 401) to {what}: set {USER_ENV} and "
            f"{PASSWORD_ENV}."
        )
    if status in (401, 403):
        return (
            f"The PACS at {url} refused the credentials (HTTP {status}) when asked to {what}: "
            f"set {USER_ENV} and {PASSWORD_ENV} (or --user) to an account allowed to do this."
        )
    if status == 404:
        return f"The PACS at {url} has no such resource (HTTP 404) when asked to {what}."
    return f"The PACS at {url} answered HTTP {status} when asked to {what}."


def _study_summary(ds: Dataset, identifying: bool) -> StudySummary:
    modalities = ds.get("ModalitiesInStudy") or []
    if isinstance(modalities, str):
        modalities = [modalities]
    patient = None
    if identifying:
        patient = {k: str(ds.get(k, "")) for k in IDENTIFYING_STUDY_FIELDS}
    return StudySummary(
        study_uid=str(ds.StudyInstanceUID),
        description=str(ds.get("StudyDescription", "")),
        modalities=tuple(str(m) for m in modalities),
        n_series=_int_or_none(ds.get("NumberOfStudyRelatedSeries")),
        patient=patient,
    )


def _series_summary(ds: Dataset) -> SeriesSummary:
    return SeriesSummary(
        series_uid=str(ds.SeriesInstanceUID),
        modality=str(ds.get("Modality", "")),
        description=str(ds.get("SeriesDescription", "")),
        number=_int_or_none(ds.get("SeriesNumber")),
        n_instances=_int_or_none(ds.get("NumberOfSeriesRelatedInstances")),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


# -- the whole round trip --------------------------------------------------------------------------


def classify_study(
    pacs: Pacs,
    study_uid: str,
    backend: Backend,
    version: int | None,
    *,
    series_uid: str | None = None,
    store: bool = True,
) -> list[SeriesReport]:
    """Classify the study's MR series (or the one asked) and store the results in the study.

    Each series: WADO-RS into memory, read as a volume
    (:func:`tumorlib.studies.readers.read_series`), classified
    (:func:`serving.clients.study.classify_series`), its SR and Grad-CAM captures built
    (:mod:`serving.pacs.results`) and, with ``store``, sent back by STOW-RS.
    """
    candidates = pacs.list_series(study_uid)
    if series_uid is not None:
        chosen = [s for s in candidates if s.series_uid == series_uid]
        if not chosen:
            raise PacsError(f"Study {study_uid} has no series {series_uid} at {pacs.url}.")
    else:
        chosen = [s for s in candidates if s.modality == IMAGE_MODALITY]
        if not chosen:
            found = ", ".join(sorted({s.modality or "?" for s in candidates})) or "none"
            raise PacsError(
                f"Study {study_uid} has no {IMAGE_MODALITY} series to classify "
                f"(modalities: {found})."
            )
    return [_classify_one(pacs, study_uid, summary, backend, version, store) for summary in chosen]


def _classify_one(
    pacs: Pacs,
    study_uid: str,
    summary: SeriesSummary,
    backend: Backend,
    version: int | None,
    store: bool,
) -> SeriesReport:
    files = pacs.retrieve_series(study_uid, summary.series_uid)
    series = [s for s in read_series(files, decode=False) if s.kind == "dicom"]
    if len(series) != 1:
        raise PacsError(f"Series {summary.series_uid} did not read as one DICOM series.")
    result = classify_series(series[0], backend, version)
    overlays, missing = overlays_for(result, backend, version)
    datasets = [make_structured_report(result), *make_secondary_captures(result, overlays)]
    report = SeriesReport(summary.series_uid, summary.description, result)
    report.notes += [*series[0].warnings, *(f"no Grad-CAM for {m}" for m in missing)]
    if store:
        report.stored = pacs.store(datasets)
    return report
