"""Regenerate ``dummy_data/``: a tiny fake SARTAJ archive for the builder's unit test.

TFDS's ``DatasetBuilderTestCase`` hands ``dummy_data/`` to the builder as its manual dir, so the
folder mirrors the real archive's extracted layout: ``Training/`` and ``Testing/``, each with
``glioma_tumor/``, ``meningioma_tumor/``, ``no_tumor/`` and ``pituitary_tumor/``, file names with
spaces and parentheses as in the original. Per class there are three Training and one Testing
image, all unrelated random textures (no two are near-duplicates), plus one Testing file that is
a byte-identical copy of a Training glioma image, so the ``clean`` config has a duplicate to drop.
One image is greyscale and one is not square, as in the real archive.

Expected counts (asserted by ``brain_mri_dataset_builder_test.py``):

* ``original``: train 12, test 5;
* ``clean``: 16 distinct images in 16 groups, 4 per class, split 2/1/1 per class (the split
  planner fills train, then validation, then test when each class is this small) -> train 8,
  validation 4, test 4; the copy is removed as an exact duplicate.

It also holds a tiny TCGA-LGG extra-sequences archive (``extra_sequences/``, extracted, with its
``metadata.csv``) for the ``multi_sequence`` config: 10 patients at 3 sites, a FLAIR and a
pre-contrast T1 glioma slice each, plus a FLAIR no-tumour slice for the first four — 24 PNGs.
Split by patient (70/15/15, :func:`brain_mri.lgg.plan_patients`): 7 / 2 / 1 patients, so
``multi_sequence`` is clean's 8/4/4 plus 18/4/2 slices -> train 26, validation 8, test 6.

Run from the repository root: ``.venv/bin/python datasets/brain_mri/make_dummy_data.py``.
The output is deterministic (fixed seed), so re-running it produces the same files.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from brain_mri import lgg
from brain_mri.sartaj import SOURCE_DIR_TO_CLASS

OUT = Path(__file__).resolve().parent / "dummy_data"
FOLDERS = tuple(SOURCE_DIR_TO_CLASS)  # the archive's class folders, as sartaj reads them
PREFIX = {"glioma_tumor": "gg", "meningioma_tumor": "m", "no_tumor": "no", "pituitary_tumor": "p"}
SIZE = 64


def texture(rng: np.random.Generator, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A smooth random grey texture: independent 8x8 noise upsampled to full size.

    Two such images have thumbnail cosines around 0.1-0.5, far below the near-duplicate
    threshold of 0.95, so every generated image is its own group unless copied on purpose.
    """
    coarse = rng.uniform(0, 255, size=(8, 8)).astype(np.uint8)
    resized = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def jpeg(pixels: np.ndarray, mode: str = "RGB", quality: int = 90) -> bytes:
    """Encode a greyscale array as JPEG, as 3-channel RGB or single-channel L."""
    image = Image.fromarray(pixels, mode="L")
    if mode == "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_lgg(rng: np.random.Generator) -> None:
    """The TCGA-LGG stand-in: ``extra_sequences/<folder>/<case>_<slice>_<seq>.png`` + metadata."""
    sequences = {"FLAIR": "flair", "T1 (pre-contrast)": "t1"}
    rows = ["file,label,sequence,source,group,case,slice_index"]
    for p in range(10):
        site = ("CS", "DU", "HT")[p % 3]
        patient = f"TCGA_{site}_{1000 + p}"
        case = f"{patient}_20000101"
        slices = [("glioma", seq, 10) for seq in sequences]
        if p < 4:
            slices.append(("no_tumor", "FLAIR", 30))
        for label, sequence, index in slices:
            short = sequences[sequence]
            folder = f"{label}_{short}_tcga-lgg"
            name = f"{lgg.ROOT}/{folder}/{case}_{index}_{short}.png"
            path = OUT / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png(texture(rng, 32, 32)))
            rows.append(f"{name},{label},{sequence},TCGA-LGG,{patient},{case},{index}")
    (OUT / lgg.METADATA_CSV).write_text("\n".join(rows) + "\n")


def main() -> None:
    rng = np.random.default_rng(20201)
    if OUT.exists():
        shutil.rmtree(OUT)
    for split, per_class in (("Training", 3), ("Testing", 1)):
        for folder in FOLDERS:
            directory = OUT / split / folder
            directory.mkdir(parents=True)
            for k in range(1, per_class + 1):
                if split == "Training" and folder == "no_tumor" and k == 2:
                    data = jpeg(texture(rng, SIZE, SIZE * 3 // 4))  # not square
                elif split == "Training" and folder == "pituitary_tumor" and k == 3:
                    data = jpeg(texture(rng), mode="L")  # greyscale JPEG
                else:
                    data = jpeg(texture(rng))
                name = f"image({k}).jpg" if split == "Testing" else f"{PREFIX[folder]} ({k}).jpg"
                (directory / name).write_bytes(data)
    # An exact copy of a Training image filed in Testing under the same class.
    source = OUT / "Training" / "glioma_tumor" / "gg (1).jpg"
    (OUT / "Testing" / "glioma_tumor" / "image(2).jpg").write_bytes(source.read_bytes())
    write_lgg(rng)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in OUT.rglob('*.*g'))} images ({total:,} bytes) to {OUT}")


if __name__ == "__main__":
    main()
