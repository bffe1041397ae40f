"""Reading the TCGA-LGG extra-sequences archive and splitting it by patient.

``extra_sequences_mri.zip`` (``../shared/data``; see its README) holds 2,013 PNG slices of 80
TCGA-LGG patients: lower-grade gliomas on FLAIR and pre-contrast T1, and slice-level no-tumour
controls from the same patients. ``extra_sequences/metadata.csv`` names each file's label,
sequence and patient. Neighbouring slices of one patient are near-duplicates, so the split is by
patient (never by slice): whole patients go to train / validation / test (70/15/15), stratified
by the TCGA tissue-source site (the hospital, hence the scanner) in a seeded order.

Licence: CC BY-NC-SA 4.0 (non-commercial, share-alike, attribution) — anything trained on it
inherits that; :data:`LICENCE` travels into the dataset's metadata and the model card.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARCHIVE_NAME = "extra_sequences_mri.zip"
ROOT = "extra_sequences"
METADATA_CSV = f"{ROOT}/metadata.csv"
SOURCE_NAME = "tcga_lgg"
LICENCE = "CC BY-NC-SA 4.0 (TCGA-LGG images CC BY 3.0; Buda et al. slice selection and masks)"
CITATION = (
    "Buda, Saha, Mazurowski, Comput. Biol. Med. 109:218-225 (2019); Pedano et al., TCGA-LGG, "
    "TCIA (2016), doi:10.7937/K9/TCIA.2016.L4LTD3TK"
)
# metadata.csv's sequence names -> the dataset's `sequence` labels.
SEQUENCES: dict[str, str] = {"FLAIR": "flair", "T1 (pre-contrast)": "t1_precontrast"}
LABELS: tuple[str, ...] = ("glioma", "no_tumor")
# A patient's group id in the dataset's `duplicate_group` feature: this offset plus the patient's
# index in sorted order, far above any SARTAJ group id (a few thousand), so ids never collide.
GROUP_OFFSET = 1_000_000


@dataclass(frozen=True)
class LggSlice:
    """One slice of the archive: what ``metadata.csv`` says of it (and its bytes, when read)."""

    member: str  # zip entry, or path relative to an extracted folder
    file_name: str  # "extra_sequences/glioma_flair_tcga-lgg/TCGA_CS_4941_19960909_11_flair.png"
    label: str  # "glioma" or "no_tumor"
    sequence: str  # one of SEQUENCES' values
    patient: str  # "TCGA_CS_4941"
    data: bytes = b""

    @property
    def site(self) -> str:
        """The TCGA tissue-source site (the contributing hospital): ``CS`` of ``TCGA_CS_4941``."""
        return self.patient.split("_")[1] if self.patient.count("_") >= 2 else self.patient


def find_archive(manual_dir: Path) -> Path | None:
    """The archive (zip) or an extracted folder holding ``extra_sequences/``; None if absent."""
    manual_dir = Path(manual_dir)
    for candidate in (manual_dir / ARCHIVE_NAME, manual_dir):
        if candidate.is_file() and zipfile.is_zipfile(candidate):
            return candidate
        if candidate.is_dir() and (candidate / METADATA_CSV).is_file():
            return candidate
    return None


def require_archive(manual_dir: Path | None) -> Path:
    """:func:`find_archive`, or an error that says where the archive must go."""
    found = find_archive(Path(manual_dir)) if manual_dir is not None else None
    if found is None:
        raise FileNotFoundError(
            f"the TCGA-LGG extra-sequences archive ({ARCHIVE_NAME}, or an extracted {ROOT}/ "
            f"with {METADATA_CSV}) is not in the manual dir {manual_dir}; this config needs it "
            "(it has no public download in this form: see ../shared/data/README.md)"
        )
    return found


def _read(source: Path, member: str) -> bytes:
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            return archive.read(member)
    return (source / member).read_bytes()


def list_slices(source: Path) -> list[LggSlice]:
    """Every slice named in ``metadata.csv`` (without bytes), sorted by file name."""
    source = Path(source)
    rows = csv.DictReader(io.StringIO(_read(source, METADATA_CSV).decode("utf-8")))
    out = []
    for row in rows:
        if row["label"] not in LABELS or row["sequence"] not in SEQUENCES:
            raise ValueError(f"{METADATA_CSV}: unexpected label/sequence in row {row}")
        out.append(
            LggSlice(
                row["file"], row["file"], row["label"], SEQUENCES[row["sequence"]], row["group"]
            )
        )
    return sorted(out, key=lambda s: s.file_name)


def read_slices(source: Path, slices: Sequence[LggSlice]) -> list[LggSlice]:
    """The same slices with their bytes, opening a zip once."""
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            datas = [archive.read(s.member) for s in slices]
    else:
        datas = [(source / s.member).read_bytes() for s in slices]
    return [
        LggSlice(s.member, s.file_name, s.label, s.sequence, s.patient, d)
        for s, d in zip(slices, datas)
    ]


def iter_slices(source: Path) -> Iterator[LggSlice]:
    """Every slice with its bytes, in file-name order."""
    yield from read_slices(source, list_slices(source))


def patient_groups(slices: Sequence[LggSlice]) -> dict[str, int]:
    """Patient -> its ``duplicate_group`` id (:data:`GROUP_OFFSET` + index in sorted order)."""
    return {p: GROUP_OFFSET + i for i, p in enumerate(sorted({s.patient for s in slices}))}


def plan_patients(
    slices: Sequence[LggSlice],
    split_names: Sequence[str],
    fractions: Sequence[float],
    seed: int,
) -> dict[str, str]:
    """Patient -> split: whole patients, stratified by site, seeded.

    Patients are visited site by site, each site in a seeded random order, and each goes to the
    split furthest below its target share of the patients seen so far — of its own site first,
    of all patients on a tie — so the splits hit their overall shares and every split draws from
    every hospital that has enough patients.
    """
    by_site: dict[str, set[str]] = {}
    for s in slices:
        by_site.setdefault(s.site, set()).add(s.patient)
    rng = np.random.default_rng(seed)
    shares = np.asarray(fractions, dtype=float)
    total = np.zeros(len(split_names))
    out: dict[str, str] = {}
    for site in sorted(by_site):
        patients = sorted(by_site[site])
        counts = np.zeros(len(split_names))
        for k in rng.permutation(len(patients)):
            site_deficit = shares * (counts.sum() + 1) - counts
            overall_deficit = shares * (total.sum() + 1) - total
            choice = int(np.lexsort((-overall_deficit, -np.round(site_deficit, 9)))[0])
            counts[choice] += 1
            total[choice] += 1
            out[patients[k]] = split_names[choice]
    return out
