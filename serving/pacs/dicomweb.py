"""A hospital PACS over DICOMweb: find a study (QIDO-RS), fetch a series (WADO-RS), classify it,
store the SR and the Grad-CAM captures back into the same study (STOW-RS).

Why DICOMweb: every current PACS (Orthanc, dcm4chee-arc, Google/Azure/AWS health imaging) speaks
it over plain HTTPS, so no DIMSE port, AE title or firewall rule is needed. A thin layer over
:class:`dicomweb_client.api.DICOMwebClient` on the one client policy
(:mod:`serving.common.http_policy`): a deadline per call and per command, QIDO answers capped
while they stream, a series retrieved as a stream of Part 10 files capped at the study byte limit
(never a whole body in memory first), retries only for the idempotent QIDO/WADO GETs. The input
policy's study limits are checked before anything is retrieved, and failures are words. See
``docs/pacs.md``.

Privacy: retrieved instances stay in memory; QIDO answers are cut to the attributes asked for
before pydicom sees them, so patient attributes (and pydicom's complaints about malformed ones)
never appear unless a caller asks; descriptions are escaped (:func:`printable`) where they are
made; the URL is shown without credentials; nothing here logs a header value.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword

from serving.common.deadline import Deadline, DeadlineExceeded
from serving.common.http_policy import ClientPolicy, ResponseTooLarge, make_session
from tumorlib.contracts.display import printable, safe_url
from tumorlib.inputs import policy, study_policy
from tumorlib.inputs.dicom import silence_pydicom_logging

USER_ENV = "TUMORLIB_PACS_USER"
PASSWORD_ENV = "TUMORLIB_PACS_PASSWORD"
DEFAULT_TIMEOUT_S = 30.0  # one call, its retries included
DEFAULT_DEADLINE_S = 900.0  # one command, every call together
MAX_QIDO_BYTES = 16 * 1024 * 1024  # a search answer: thousands of studies fit in a few MB
MULTIPART_OVERHEAD = 1024 * 1024  # part headers and boundaries around a series' files
IMAGE_MODALITY = "MR"
IDENTIFYING_STUDY_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
STUDY_FIELDS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries")
SERIES_FIELDS = ("Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances")
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NOT_DICOMWEB = (
    "The server at {url} did not answer like a DICOMweb service when asked to {what}: is {url} "
    "the DICOMweb root (for Orthanc, http://host:8042/dicom-web)?"
)

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
silence_pydicom_logging()


def _json_keys(keywords: Sequence[str]) -> frozenset[str]:
    """DICOM JSON keys (``"0020000D"``) of ``keywords``."""
    return frozenset(f"{tag_for_keyword(k):08X}" for k in keywords)


STUDY_KEYS = _json_keys(("StudyInstanceUID", *STUDY_FIELDS))
SERIES_KEYS = _json_keys(("SeriesInstanceUID", *SERIES_FIELDS))
IDENTIFYING_KEYS = _json_keys(IDENTIFYING_STUDY_FIELDS)


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
        deadline: Deadline | None = None,
        retries: int = 3,
    ) -> None:
        """``user``/``password`` default to ``$TUMORLIB_PACS_USER``/``$TUMORLIB_PACS_PASSWORD``;
        ``timeout_s`` bounds each call with its retries, ``deadline`` the caller's command."""
        self.url = url.rstrip("/")
        self.display_url = safe_url(self.url)
        self.policy = ClientPolicy(
            call_s=timeout_s,
            command=deadline,
            max_response_bytes=MAX_QIDO_BYTES,
            retries=retries,
        )
        self.session = make_session(self.policy, auth=_credentials(user, password))
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout_s)
        self.client.set_http_retry_params(retry=False)  # the session retries, within deadlines

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
            keys = STUDY_KEYS | (IDENTIFYING_KEYS if identifying else frozenset())
            return [_study_summary(_dataset(item, keys), identifying) for item in found]

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        """The series of one study, in series-number order."""
        with self._call(f"list the series of study {study_uid}"):
            found = self.client.search_for_series(study_uid, fields=list(SERIES_FIELDS))
            summaries = [_series_summary(_dataset(item, SERIES_KEYS)) for item in found]
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
            raise PacsError(f"Study {study_uid} has no series {series_uid} at {self.display_url}.")
        files: list[tuple[str, bytes]] = []
        total = 0
        try:
            if known[series_uid].n_instances is not None:
                study_policy.check_study_files(
                    known[series_uid].n_instances, max_files=max_instances
                )
            too_large = (
                f"Series {series_uid} is not retrieved: the PACS sent more than "
                f"{policy.megabytes(max_bytes)}, the limit for a study."
            )
            with self._call(f"retrieve series {series_uid}", too_large):
                for data in self._wado_series(study_uid, series_uid, max_bytes):
                    total += len(data)
                    study_policy.check_study_files(len(files) + 1, max_files=max_instances)
                    study_policy.check_study_bytes(total, max_bytes=max_bytes)
                    files.append((f"instance-{len(files) + 1:05d}.dcm", bytes(data)))
        except policy.InputRejected as err:
            raise PacsError(f"Series {series_uid} is not retrieved: {err.message}") from None
        return files

    def _wado_series(self, study_uid: str, series_uid: str, max_bytes: int) -> Iterator[bytes]:
        """The series' instances as Part 10 bytes, read from one WADO-RS stream part by part
        (capped at ``max_bytes`` plus the multipart framing while it streams)."""
        url = f"{self.url}/studies/{study_uid}/series/{series_uid}"
        capped = replace(self.policy, max_response_bytes=max_bytes + MULTIPART_OVERHEAD)
        self.session.policy = capped
        try:
            answer = self.session.get(url, headers={"Accept": WADO_ACCEPT}, stream=True)
        finally:
            self.session.policy = self.policy
        with answer:
            answer.raise_for_status()
            yield from self.client._decode_multipart_message(answer, stream=True)

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
                f"The PACS at {self.display_url} refused {len(failed)} of {len(datasets)} result "
                f"instances (failure reason {printable(', '.join(reasons))}); "
                f"{len(datasets) - len(failed)} were stored."
            )
        return [
            str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence", [])
        ]

    @contextmanager
    def _call(self, what: str, too_large: str | None = None) -> Iterator[None]:
        """HTTP and connection failures as :class:`PacsError`, in words."""
        url = self.display_url
        try:
            yield
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            anonymous = self.session.auth is None
            raise PacsError(_http_message(url, what, status, anonymous)) from None
        except DeadlineExceeded as err:
            raise PacsError(
                f"The PACS at {url} did not answer within {err.budget_s:g} s ({what})."
            ) from None
        except ResponseTooLarge as err:
            raise PacsError(
                too_large
                or f"The PACS at {url} answered with more than {policy.megabytes(err.limit)} "
                f"when asked to {what}; narrow the search (--limit, --patient-id, --accession)."
            ) from None
        except requests.Timeout:
            raise PacsError(f"The PACS at {url} did not answer in time ({what}).") from None
        except requests.ConnectionError:
            raise PacsError(
                f"Cannot reach the PACS at {url} ({what}): is the URL right and the server up?"
            ) from None
        except policy.InputRejected:
            raise  # the input policy's own words, worded by the caller
        except (ValueError, KeyError, TypeError, AttributeError):  # JSON, multipart, DICOM JSON
            raise PacsError(NOT_DICOMWEB.format(url=url, what=what)) from None
        except requests.RequestException as err:
            raise PacsError(f"The PACS at {url} failed ({what}): {type(err).__name__}.") from None


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
    root = f"is {url} the DICOMweb root (for Orthanc, http://host:8042/dicom-web)?"
    if status == 404:
        return f"The PACS at {url} has no such resource (HTTP 404) when asked to {what}: {root}"
    if status in (400, 405, 406, 415):
        return f"The PACS at {url} answered HTTP {status} when asked to {what}: {root}"
    return f"The PACS at {url} answered HTTP {status} when asked to {what}."


def _dataset(item: Any, keys: frozenset[str]) -> Dataset:
    """One QIDO-RS answer as a dataset of the attributes in ``keys`` only: what was not asked for
    (a birth date a server adds anyway) never reaches pydicom, its warnings or its logs."""
    if not isinstance(item, dict):
        raise ValueError("a QIDO-RS answer that is not a DICOM JSON object")
    kept = {key: value for key, value in item.items() if str(key).upper() in keys}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Dataset.from_json(kept)


def _text(ds: Dataset, keyword: str) -> str:
    """A PACS string, escaped: an ``ESC[2J`` in a description must not clear a terminal."""
    return printable(ds.get(keyword, "") or "")


def _study_summary(ds: Dataset, identifying: bool) -> StudySummary:
    modalities = ds.get("ModalitiesInStudy") or []
    if isinstance(modalities, str):
        modalities = [modalities]
    patient = None
    if identifying:
        patient = {k: printable(ds.get(k, "") or "") for k in IDENTIFYING_STUDY_FIELDS}
    return StudySummary(
        study_uid=printable(ds.StudyInstanceUID),
        description=_text(ds, "StudyDescription"),
        modalities=tuple(printable(m, 16) for m in modalities),
        n_series=_int_or_none(ds.get("NumberOfStudyRelatedSeries")),
        patient=patient,
    )


def _series_summary(ds: Dataset) -> SeriesSummary:
    return SeriesSummary(
        series_uid=printable(ds.SeriesInstanceUID),
        modality=_text(ds, "Modality"),
        description=_text(ds, "SeriesDescription"),
        number=_int_or_none(ds.get("SeriesNumber")),
        n_instances=_int_or_none(ds.get("NumberOfSeriesRelatedInstances")),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None
