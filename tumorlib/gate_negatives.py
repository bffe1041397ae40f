"""Images that are certainly not brain MRI slices, producible offline: the gate's negatives.

Noise, blank images, gradients, rendered text and photos shipped inside installed packages (no
download). :func:`tumorlib.input_gate.run_gate` measures the gate's rejection rate on them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def _packaged_photos() -> list[tuple[str, np.ndarray]]:
    """Photos and pictures shipped inside installed packages (no download)."""
    from PIL import Image

    found: list[tuple[str, np.ndarray]] = []
    candidates: list[Path] = []
    try:
        import matplotlib

        mpl = Path(matplotlib.get_data_path())
        candidates += [
            mpl / "sample_data" / n
            for n in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")
        ]
        candidates += sorted((mpl / "images").glob("*_large.png"))[:10]
    except ImportError:
        pass
    try:
        import sklearn.datasets

        candidates += sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    except ImportError:
        pass
    try:
        import skimage.data

        candidates += sorted(Path(skimage.data.__file__).parent.glob("*.png"))
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            with Image.open(path) as im:
                found.append((f"photo:{path.name}", np.asarray(im.convert("RGB"))))
    return found


def _text_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A page of random words, dark on light or light on dark (reports, screenshots)."""
    from PIL import Image, ImageDraw, ImageFont

    dark = rng.random() < 0.5
    image = Image.new("RGB", (size, size), (0, 0, 0) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(10, 28)))
    words = ["patient", "report", "normal", "MRI", "brain", "lorem", "ipsum", "scan", "2024"]
    y = 4
    while y < size - 10:
        line = " ".join(rng.choice(words, 6))
        draw.text((4, y), line, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
        y += int(rng.integers(14, 32))
    return np.asarray(image)


def generate_negatives(
    size: int = 224, seed: int = 0, per_kind: int = 8
) -> list[tuple[str, np.ndarray]]:
    """``(kind, uint8 [H, W, 3])`` pairs: noise, blanks, gradients, text, packaged photos.

    Photos also appear cropped, rescaled and in grayscale — MRI slices are grayscale, so a gray
    photo is the harder, more honest negative.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    for _ in range(per_kind):
        out.append(("noise:uniform", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        gauss = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (size, size, 1))
        out.append(("noise:gaussian_gray", np.clip(gauss, 0, 255).astype(np.uint8).repeat(3, 2)))
        out.append(("text", _text_image(rng, size)))
    for value in (0, 32, 128, 200, 255):
        out.append((f"blank:{value}", np.full((size, size, 3), value, np.uint8)))
    out.append(("blank:red", np.tile(np.array([255, 0, 0], np.uint8), (size, size, 1))))
    ramp = np.linspace(0, 255, size)
    yy, xx = np.mgrid[0:size, 0:size]
    radial = np.hypot(yy - size / 2, xx - size / 2)
    for name, g in (
        ("horizontal", np.tile(ramp, (size, 1))),
        ("vertical", np.tile(ramp, (size, 1)).T),
        ("radial", 255 * radial / radial.max()),
        ("radial_inverse", 255 - 255 * radial / radial.max()),
        ("checkerboard", 255.0 * (((yy // 16) + (xx // 16)) % 2)),
    ):
        out.append((f"gradient:{name}", g.astype(np.uint8)[..., None].repeat(3, 2)))
    for name, photo in _packaged_photos():
        out.append((name, photo))
        gray = photo.mean(axis=2, keepdims=True).astype(np.uint8).repeat(3, 2)
        out.append((name + ":gray", gray))
        h, w = photo.shape[:2]
        for _ in range(3):
            crop = int(min(h, w) * rng.uniform(0.4, 0.9))
            y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            out.append((name + ":crop", photo[y0 : y0 + crop, x0 : x0 + crop]))
    return out


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image: negatives enter the gate through the served preprocessing."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
