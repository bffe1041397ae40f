"""Images that are certainly not brain MRI slices, producible offline: the gate's negatives.

Noise, blank images, gradients, rendered text and photos shipped inside installed packages (no
download). :func:`tumorlib.safety.input_gate.run_gate` measures the gate's rejection rate on them.
"""

from __future__ import annotations

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


def _document(rng: np.random.Generator, size: int) -> np.ndarray:
    """A report page: a heading, paragraphs of small text, a table with ruled lines."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(235, 256, 3)))
    draw = ImageDraw.Draw(page)
    draw.text((8, 6), "RADIOLOGY REPORT", fill=(0, 0, 0), font=ImageFont.load_default(size=18))
    small = ImageFont.load_default(size=int(rng.integers(8, 12)))
    words = ["findings", "impression", "no", "acute", "signal", "within", "limits", "axial"]
    y = 34
    while y < size * 0.6:
        draw.text((8, y), " ".join(rng.choice(words, 9)), fill=(30, 30, 30), font=small)
        y += 13
    top, rows = int(size * 0.65), int(rng.integers(3, 6))
    for r in range(rows + 1):
        draw.line([(8, top + r * 14), (size - 8, top + r * 14)], fill=(0, 0, 0))
    for c in range(4):
        x = 8 + c * (size - 16) // 3
        draw.line([(x, top), (x, top + rows * 14)], fill=(0, 0, 0))
    return np.asarray(page)


def _screenshot(rng: np.random.Generator, size: int) -> np.ndarray:
    """An application window: title bar, side panel, buttons, coloured blocks, a little text."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (size, size), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    accent = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.rectangle([0, 0, size, 22], fill=accent)
    draw.rectangle([0, 22, size // 4, size], fill=(220, 224, 230))
    font = ImageFont.load_default(size=10)
    for i in range(int(rng.integers(3, 8))):
        draw.text((6, 30 + 18 * i), f"Menu item {i}", fill=(20, 20, 20), font=font)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(size // 4 + 4, size - 40)), int(rng.integers(30, size - 30))
        x1, y1 = x0 + int(rng.integers(30, 90)), y0 + int(rng.integers(14, 60))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(90, 90, 90))
    return np.asarray(image)


def _colour_drawing(rng: np.random.Generator, size: int) -> np.ndarray:
    """Saturated shapes on a coloured ground (diagrams, clip art, slides)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
        xy = [int(box[0][0]), int(box[1][0]), int(box[0][1]) + 4, int(box[1][1]) + 4]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(xy, fill=colour)
    return np.asarray(image)


def _chart(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plot with axes and lines, as a matplotlib figure renders it (reports, slides)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3), dpi=size / 3)
    for _ in range(int(rng.integers(1, 4))):
        ax.plot(np.cumsum(rng.normal(size=50)))
    if rng.random() < 0.5:
        ax.bar(range(5), rng.random(5), alpha=0.5)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    plt.close(fig)
    return image


def generate_negatives(
    size: int = 224, seed: int = 0, per_kind: int = 8, photo_half: int | None = None
) -> list[tuple[str, np.ndarray]]:
    """``(kind, uint8 [H, W, 3])`` pairs: noise, blanks, gradients, text, report pages,
    application screenshots, colour drawings, charts, packaged photos.

    Photos also appear cropped, rescaled and in grayscale — MRI slices are grayscale, so a gray
    photo is the harder, more honest negative. ``photo_half`` 0 or 1 keeps every other packaged
    photo (even or odd positions), so negatives a check is fitted on and those it is measured on
    never share a photo; other kinds differ by ``seed``.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    for _ in range(per_kind):
        out.append(("noise:uniform", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        gauss = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (size, size, 1))
        out.append(("noise:gaussian_gray", np.clip(gauss, 0, 255).astype(np.uint8).repeat(3, 2)))
        out.append(("text", _text_image(rng, size)))
        out.append(("document", _document(rng, size)))
        out.append(("screenshot", _screenshot(rng, size)))
        out.append(("colour_drawing", _colour_drawing(rng, size)))
        out.append(("chart", _chart(rng, size)))
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
    photos = _packaged_photos()
    if photo_half is not None:
        photos = photos[photo_half::2]
    for name, photo in photos:
        out.append((name, photo))
        gray = photo.mean(axis=2, keepdims=True).astype(np.uint8).repeat(3, 2)
        out.append((name + ":gray", gray))
        h, w = photo.shape[:2]
        for _ in range(3):
            crop = int(min(h, w) * rng.uniform(0.4, 0.9))
            y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            out.append((name + ":crop", photo[y0 : y0 + crop, x0 : x0 + crop]))
    return out


def unusable_views(
    slices: list[np.ndarray], seed: int = 0, per_kind: int = 8
) -> list[tuple[str, np.ndarray]]:
    """Real slices made into views the classifier is not for: a quarter of a slice enlarged,
    a slice on its side or upside down, and a 3×3 mosaic of slices (a PACS screen capture).

    Reported apart from the other negatives: they are brain MRI, just not one whole slice in
    the standard orientation, so refusing them is desirable rather than required.
    """
    from PIL import Image

    if not slices:
        return []
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    for i in range(per_kind):
        image = slices[i % len(slices)]
        h, w = image.shape[:2]
        y0, x0 = int(rng.integers(0, 2)) * h // 2, int(rng.integers(0, 2)) * w // 2
        quarter = image[y0 : y0 + h // 2, x0 : x0 + w // 2]
        out.append(("view:quarter_crop", np.asarray(Image.fromarray(quarter).resize((w, h)))))
        out.append(("view:rotated_90", np.ascontiguousarray(np.rot90(image))))
        out.append(("view:rotated_180", np.ascontiguousarray(image[::-1, ::-1])))
        tiles = [
            np.asarray(Image.fromarray(slices[int(j)]).resize((w // 3, h // 3)))
            for j in rng.integers(0, len(slices), 9)
        ]
        rows = [np.concatenate(tiles[r * 3 : r * 3 + 3], axis=1) for r in range(3)]
        out.append(("view:mosaic", np.concatenate(rows, axis=0)))
    return out
