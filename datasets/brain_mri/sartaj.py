"""Reading the SARTAJ "Brain Tumor Classification (MRI)" archive, zipped or extracted.

The public archive has ``Training/`` and ``Testing/`` folders, each with one folder per class
(``glioma_tumor``, ...). GitHub's own zip download wraps them in a top-level folder, the Kaggle
copy does not; both are accepted, as is an already-extracted tree.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ARCHIVE_NAME = "brain_tumor_classification_mri.zip"
SOURCE_SPLITS: tuple[str, ...] = ("Training", "Testing")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# The archive's class folder names, mapped to the dataset's label names (brain_mri.labels).
SOURCE_DIR_TO_CLASS: dict[str, str] = {
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "no_tumor",
    "pituitary_tumor": "pituitary",
}


@dataclass(frozen=True)
class SourceImage:
    """One image file of the archive, with what its path says about it."""

    file_name: str  # "Training/glioma_tumor/gg (1).jpg", relative to the archive's root
    source_split: str  # "Training" or "Testing"
    label: str  # one of brain_mri.labels.CLASS_NAMES
    data: bytes


def _parse(relative: PurePosixPath) -> tuple[str, str, str] | None:
    """(file_name, source_split, label) for an image path, or None for anything else."""
    parts = relative.parts
    for i in range(len(parts) - 2):
        split, folder = parts[i], parts[i + 1]
        if split in SOURCE_SPLITS and folder in SOURCE_DIR_TO_CLASS and len(parts) == i + 3:
            if relative.suffix.lower() not in IMAGE_SUFFIXES:
                return None
            return "/".join(parts[i:]), split, SOURCE_DIR_TO_CLASS[folder]
    return None


def find_archive(manual_dir: Path) -> Path:
    """The archive (zip) or extracted root inside ``manual_dir``, with a clear error if absent."""
    manual_dir = Path(manual_dir)
    candidates = [manual_dir / ARCHIVE_NAME, manual_dir, *sorted(manual_dir.glob("*.zip"))]
    for candidate in candidates:
        if candidate.is_file() and zipfile.is_zipfile(candidate):
            return candidate
        if candidate.is_dir() and any((candidate / s).is_dir() for s in SOURCE_SPLITS):
            return candidate
    for sub in sorted(p for p in manual_dir.glob("*") if p.is_dir()):
        if any((sub / s).is_dir() for s in SOURCE_SPLITS):
            return sub
    raise FileNotFoundError(
        f"no SARTAJ archive in {manual_dir}: expected {ARCHIVE_NAME} (or any .zip of the public "
        f"archive) or an extracted folder with {' and '.join(SOURCE_SPLITS)}/"
    )


def list_members(source: Path) -> list[tuple[str, str, str, str]]:
    """``(member, file_name, source_split, label)`` of every class image, sorted, without reading.

    ``member`` is the zip entry name or the path relative to an extracted folder; the Beam build
    lists on the driver and reads in parallel with :func:`read_member`.
    """
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            names = sorted(n for n in archive.namelist() if not n.endswith("/"))
    elif source.is_dir():
        names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    else:
        raise FileNotFoundError(f"{source} is neither a zip archive nor a folder")
    out = []
    for name in names:
        parsed = _parse(PurePosixPath(name))
        if parsed:
            out.append((name, *parsed))
    return out


def read_members(source: Path, members: list[str]) -> list[bytes]:
    """The bytes of several members, opening the archive once (a worker reads a chunk)."""
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            return [archive.read(m) for m in members]
    return [(source / m).read_bytes() for m in members]


def iter_images(source: Path) -> Iterator[SourceImage]:
    """Yield every class image in a zip archive or extracted folder, in a stable (sorted) order."""
    source = Path(source)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            for member, name, split, label in list_members(source):
                yield SourceImage(name, split, label, data=archive.read(member))
    else:
        for member, name, split, label in list_members(source):
            yield SourceImage(name, split, label, data=(source / member).read_bytes())
