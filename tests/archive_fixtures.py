"""Generated stand-ins for the SARTAJ archive, with known duplicates planted in them.

Tests build the real TFDS builder on these folders, so every expectation (what is grouped, what
is dropped, what is counted) follows from what was planted here rather than from numbers copied
out of a previous run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from brain_mri.sartaj import SOURCE_DIR_TO_CLASS

FOLDERS: tuple[str, ...] = tuple(SOURCE_DIR_TO_CLASS)  # glioma_tumor, meningioma_tumor, ...


def texture(rng: np.random.Generator, height: int = 64, width: int = 64) -> np.ndarray:
    """A smooth random grey image (8x8 noise upsampled); unrelated ones have cosine << 0.95."""
    coarse = rng.uniform(0, 255, size=(8, 8)).astype(np.uint8)
    resized = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def encode(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 90, mode: str = "RGB") -> bytes:
    """Encode a uint8 array (greyscale or colour) as ``fmt`` in PIL ``mode``."""
    image = Image.fromarray(pixels)
    image = image.convert(mode)
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format=fmt, quality=quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def reencode(data: bytes, size: tuple[int, int], quality: int) -> bytes:
    """Decode, resize to ``size`` (width, height) and re-encode as JPEG at ``quality``."""
    with Image.open(io.BytesIO(data)) as image:
        resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class PlantedArchive:
    """An extracted archive on disk and what was planted in it (paths relative to ``root``)."""

    root: Path
    files: dict[str, bytes] = field(default_factory=dict)  # every file written
    exact_copies: list[tuple[str, str]] = field(default_factory=list)  # (original, copy)
    near_copies: list[tuple[str, str]] = field(default_factory=list)  # (original, re-encoded)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # same image, two classes
    corrupt: list[str] = field(default_factory=list)

    def label(self, file_name: str) -> str:
        return SOURCE_DIR_TO_CLASS[file_name.split("/")[1]]

    def write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files[name] = data
        return name

    @property
    def readable(self) -> list[str]:
        return [name for name in self.files if name not in self.corrupt]


def make_archive(
    root: Path,
    *,
    per_class_training: int = 20,
    per_class_testing: int = 4,
    seed: int = 0,
    plant: bool = True,
) -> PlantedArchive:
    """Write an extracted archive of unrelated textures, plus (``plant=True``):

    * exact copies: a Training glioma image re-filed in Testing, and a meningioma image copied
      within Training;
    * near-duplicates: a pituitary image re-encoded at JPEG quality 50 and shrunk 64->48 px, filed
      in Testing; a Testing no_tumor image enlarged to 80 px at quality 70, filed in Training;
    * label conflicts: a glioma image copied byte-for-byte under meningioma, and a pituitary
      image re-encoded (quality 60) under no_tumor;
    * corrupt files: a JPEG truncated to half its bytes, and a text file named ``.jpg``.
    """
    rng = np.random.default_rng(seed)
    archive = PlantedArchive(root=Path(root))
    for split, count in (("Training", per_class_training), ("Testing", per_class_testing)):
        for folder in FOLDERS:
            for k in range(1, count + 1):
                archive.write(f"{split}/{folder}/{folder[:2]} ({k}).jpg", encode(texture(rng)))
    if not plant:
        return archive

    def copy(original: str, new: str, data: bytes | None = None) -> str:
        return archive.write(new, archive.files[original] if data is None else data)

    pairs = [
        ("Training/glioma_tumor/gl (1).jpg", "Testing/glioma_tumor/gl (90).jpg"),
        ("Training/meningioma_tumor/me (1).jpg", "Training/meningioma_tumor/me (90).jpg"),
    ]
    for original, new in pairs:
        archive.exact_copies.append((original, copy(original, new)))

    original = "Training/pituitary_tumor/pi (1).jpg"
    data = reencode(archive.files[original], (48, 48), quality=50)
    archive.near_copies.append(
        (original, copy(original, "Testing/pituitary_tumor/pi (91).jpg", data))
    )
    original = "Testing/no_tumor/no (1).jpg"
    data = reencode(archive.files[original], (80, 80), quality=70)
    archive.near_copies.append((original, copy(original, "Training/no_tumor/no (91).jpg", data)))

    original = "Training/glioma_tumor/gl (2).jpg"
    archive.conflicts.append((original, copy(original, "Testing/meningioma_tumor/me (92).jpg")))
    original = "Training/pituitary_tumor/pi (2).jpg"
    data = reencode(archive.files[original], (64, 64), quality=60)
    archive.conflicts.append((original, copy(original, "Training/no_tumor/no (92).jpg", data)))

    truncated = archive.files["Training/glioma_tumor/gl (3).jpg"]
    archive.corrupt.append(
        archive.write("Training/glioma_tumor/gl (99).jpg", truncated[: len(truncated) // 2])
    )
    archive.corrupt.append(archive.write("Testing/no_tumor/no (99).jpg", b"this is not an image\n"))
    return archive


def make_lgg_archive(
    root: Path,
    *,
    sites: dict[str, int] | None = None,
    slices: tuple[int, int] = (3, 8),
    seed: int = 1,
) -> list[dict[str, str]]:
    """Write an extracted TCGA-LGG stand-in (``extra_sequences/`` + ``metadata.csv``) in ``root``.

    ``sites``: patients per TCGA site (default 80 patients at five sites, the real archive's
    mix); each patient gets between ``slices`` glioma slices on FLAIR and T1 and one FLAIR
    no-tumour slice. Returns the metadata rows written.
    """
    from brain_mri import lgg

    rng = np.random.default_rng(seed)
    sites = sites or {"CS": 11, "DU": 33, "EZ": 1, "FG": 10, "HT": 25}
    short = {"FLAIR": "flair", "T1 (pre-contrast)": "t1"}
    rows = []
    for site, count in sites.items():
        for p in range(count):
            patient = f"TCGA_{site}_{7000 + p}"
            n = int(rng.integers(slices[0], slices[1] + 1))
            plan = [("glioma", seq, i) for i in range(n) for seq in short]
            plan.append(("no_tumor", "FLAIR", 60))
            for label, sequence, index in plan:
                name = f"{lgg.ROOT}/{label}_{short[sequence]}_tcga-lgg/{patient}_{index}.png"
                path = Path(root) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode(texture(rng, 32, 32), fmt="PNG", mode="L"))
                rows.append({"file": name, "label": label, "sequence": sequence, "group": patient})
    header = "file,label,sequence,source,group,case,slice_index\n"
    lines = [
        f"{r['file']},{r['label']},{r['sequence']},TCGA-LGG,{r['group']},{r['group']}_1,0"
        for r in rows
    ]
    (Path(root) / lgg.METADATA_CSV).write_text(header + "\n".join(lines) + "\n")
    return rows
