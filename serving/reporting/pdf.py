"""The report as a PDF (reportlab): A4, one column, the disclaimer first and last.

Fonts are the DejaVu Sans files matplotlib ships (a dependency already), so every character the
page uses (—, ≥, ·) prints as itself on any machine. The heatmap is drawn over the slice as the
model saw it (:func:`tumorlib.model.gradcam_overlay.overlay_image`, which imports TensorFlow only
when there is a heatmap to draw). The PDF's own metadata names the tool, never the patient.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from serving.reporting.content import DISCLAIMER_TEXT, TITLE, Entry, Report, display

FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
IMAGE_MM = 62
THUMB_MM = 22
HEATMAP_OPACITY = 0.4


@cache
def _fonts() -> tuple[str, str]:
    """Register matplotlib's DejaVu Sans with reportlab (Helvetica if it cannot be found)."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    try:
        pdfmetrics.registerFont(TTFont(FONT, str(folder / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont(BOLD, str(folder / "DejaVuSans-Bold.ttf")))
    except Exception:  # noqa: BLE001 - a report in Helvetica beats no report
        return "Helvetica", "Helvetica-Bold"
    return FONT, BOLD


def _styles():
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

    regular, bold = _fonts()
    base = ParagraphStyle("base", fontName=regular, fontSize=9.5, leading=12.5)
    return {
        "base": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
        "title": ParagraphStyle("title", parent=base, fontName=bold, fontSize=15, leading=19),
        "h2": ParagraphStyle(
            "h2", parent=base, fontName=bold, fontSize=11.5, leading=15, spaceBefore=8, spaceAfter=3
        ),  # fmt: skip
        "headline": ParagraphStyle(
            "headline", parent=base, fontName=bold, fontSize=13, leading=17, spaceAfter=4
        ),  # fmt: skip
        "warning": ParagraphStyle(
            "warning",
            parent=base,
            fontName=bold,
            textColor=colors.darkred,
            borderColor=colors.darkred,
            borderWidth=0.8,
            borderPadding=4,
            spaceBefore=4,
            spaceAfter=8,
        ),  # fmt: skip
    }


def _p(text: str, style) -> object:
    from reportlab.platypus import Paragraph

    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _image(data: bytes, size_mm: float):
    """A flowable of encoded image bytes, fitted in a ``size_mm`` square (aspect kept)."""
    from PIL import Image as PILImage
    from reportlab.lib.units import mm
    from reportlab.platypus import Image

    with PILImage.open(io.BytesIO(data)) as probe:
        width, height = probe.size
        if probe.mode not in ("RGB", "L"):  # reportlab reads RGB/L reliably
            buf = io.BytesIO()
            probe.convert("RGB").save(buf, format="PNG")
            data = buf.getvalue()
    scale = size_mm * mm / max(width, height)
    return Image(io.BytesIO(data), width=width * scale, height=height * scale)


def _as_png(data: bytes) -> bytes:
    """Any upload (JPEG, PNG) as PNG bytes reportlab can place."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _table(rows: list[list], widths: list[float] | None = None, grid: bool = True):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, hAlign="LEFT")
    style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 3)]
    if grid:
        style.append(("GRID", (0, 0), (-1, -1), 0.4, colors.grey))
    table.setStyle(TableStyle(style))
    return table


def _entry(entry: Entry, styles) -> list:
    """A slice and its heatmap side by side, then its similar cases."""
    from reportlab.lib.units import mm

    story = [_p(f"{entry.title}: {entry.answer}", styles["h2"])]
    cells = [[_image(_as_png(entry.image), IMAGE_MM)]]
    captions = [_p("The slice as sent to the model", styles["small"])]
    overlay = entry.overlay
    if overlay is None and entry.heatmap is not None:
        from tumorlib.model.gradcam_overlay import overlay_image

        overlay = overlay_image(entry.image, entry.heatmap, HEATMAP_OPACITY)
    if overlay is not None:
        cells[0].append(_image(_png(overlay), IMAGE_MM))
        captions.append(
            _p(f"{entry.heatmap_method}: warm colours mark the regions that raised the score of "
               "the class most (coarse; not a segmentation)", styles["small"])
        )  # fmt: skip
    story.append(_table([cells[0], captions], [(IMAGE_MM + 6) * mm] * len(captions), grid=False))
    if entry.similar is not None and entry.similar.cases:
        story.extend(_similar(entry, styles))
    return story


def _similar(entry: Entry, styles) -> list:
    from reportlab.lib.units import mm

    similar = entry.similar
    assert similar is not None
    cases = similar.cases
    majority = display(similar.majority_label or "")
    agree = "agrees" if similar.agrees else "does not agree"
    story = [
        _p(f"{len(cases)} most similar confirmed cases (training slices, cosine similarity in "
           f"the model's features). Their majority, {majority}, {agree} with the model.",
           styles["base"]),
    ]  # fmt: skip
    per_row = 5
    for lo in range(0, len(cases), per_row):
        chunk = cases[lo : lo + per_row]
        pictures = [_image(c.thumbnail, THUMB_MM) for c in chunk]
        words = [
            _p(f"{lo + i + 1}. {display(c.label)}\nsimilarity {c.similarity:.2f}\n{c.source}",
               styles["small"])
            for i, c in enumerate(chunk)
        ]  # fmt: skip
        story.append(_table([pictures, words], [(THUMB_MM + 12) * mm] * len(chunk), grid=False))
    licences = sorted({f"{c.source}: {c.licence}" for c in cases})
    story.append(_p("Terms: " + "; ".join(licences), styles["small"]))
    return story


def _footer(canvas, doc) -> None:
    from reportlab.lib.units import mm

    regular, _ = _fonts()
    canvas.saveState()
    canvas.setFont(regular, 7)
    canvas.drawString(15 * mm, 8 * mm, f"tumorlib · {TITLE} · {DISCLAIMER_TEXT.split('.')[0]}.")
    canvas.drawRightString(195 * mm, 8 * mm, f"page {doc.page}")
    canvas.restoreState()


def render_pdf(report: Report) -> bytes:
    """The report as PDF bytes (built in memory: nothing touches the disk)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, SimpleDocTemplate, Spacer

    styles = _styles()
    story: list = [_p(TITLE, styles["title"]), _p(DISCLAIMER_TEXT, styles["warning"])]
    meta = [["Report", f"{report.kind} · generated {report.generated_at}"]]
    if report.audit_ids:
        meta.append(["Audit record", ", ".join(report.audit_ids)])
    if report.patient:
        meta.extend([[key, value] for key, value in report.patient.items()])
    story.append(_table([[_p(a, styles["base"]), _p(b, styles["base"])] for a, b in meta],
                        [40 * mm, 140 * mm]))  # fmt: skip
    story += [Spacer(1, 4 * mm), _p(report.headline, styles["headline"])]
    story += [_p(reason, styles["base"]) for reason in report.reasons]
    if report.probabilities:
        story.append(_p(report.probabilities_label, styles["h2"]))
        rows = [[_p(display(k), styles["base"]), _p(f"{v:.1%}", styles["base"])]
                for k, v in report.probabilities.items()]  # fmt: skip
        story.append(_table(rows, [60 * mm, 30 * mm]))
    if report.details:
        story.append(_table([[_p(a, styles["base"]), _p(b, styles["base"])]
                             for a, b in report.details], [40 * mm, 140 * mm]))  # fmt: skip
    for entry in report.entries:
        story.extend(_entry(entry, styles))
    model = _table([[_p(a, styles["base"]), _p(b, styles["base"])] for a, b in report.model],
                   [40 * mm, 140 * mm])  # fmt: skip
    story.append(KeepTogether([_p("The model", styles["h2"]), model]))
    story += [Spacer(1, 4 * mm), _p(DISCLAIMER_TEXT, styles["warning"])]
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=14 * mm,
        bottomMargin=16 * mm, title=TITLE, author="tumorlib", subject="decision support",
        creator="tumorlib",
    )  # fmt: skip
    doc.build(story, onFirstPage=_footer, onLaterPages=_footer)
    return buf.getvalue()
