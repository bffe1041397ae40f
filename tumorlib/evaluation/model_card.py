"""Model card: ``python -m tumorlib.model_card RUN`` writes ``RUN/model_card.md`` and ``.html``.

Why: before a radiology team trusts a model they need, on one page, what it was trained on
(and how duplicates were removed), what it is for and not for, how well it does *with
uncertainty* (bootstrap confidence intervals — a 435-image test split cannot pin a recall down to
a percent), how honest its confidence is (calibration), how often it refuses to answer
(abstention) and refuses non-MRI input (the gate), and where it is known to fall short (Mitchell
et al., 2019, "Model Cards for Model Reporting").

Everything comes from files the pipeline already wrote — ``config.json``, ``calibration.json``,
``eval/*/metrics.json`` (+ PNGs), ``abstention.json``, ``input_gate.json``,
``safety/test_predictions.npz`` and the dataset's ``metadata.json`` — so the card cannot drift
from the measured numbers. Missing pieces are listed as "not yet measured", never invented.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tumorlib.contracts.cli import run_command
from tumorlib.contracts.runs import (
    ABSTENTION_FILE,
    CALIBRATION_FILE,
    CARD_HTML,
    CARD_MD,
    CONFIG_FILE,
    EVAL_DIR,
    GATE_SUMMARY_FILE,
    METRICS_FILE,
    RunNotFoundError,
)
from tumorlib.evaluation.model_card_evidence import evidence_section
from tumorlib.evaluation.model_card_safety import (
    abstention_section,
    gate_section,
    limitations_section,
)
from tumorlib.evaluation.model_card_sections import (
    CardInputs,
    calibration_section,
    header,
    model_section,
    performance_section,
    use_sections,
)
from tumorlib.evaluation.model_card_sources import (
    data_section,
    per_source_section,
    served_checks_section,
    sources_section,
)

# The card's sections, in order: each turns the card's inputs into Markdown lines.
SECTIONS = (
    header,
    model_section,
    sources_section,
    data_section,
    use_sections,
    performance_section,
    per_source_section,
    calibration_section,
    abstention_section,
    gate_section,
    served_checks_section,
    evidence_section,
    limitations_section,
)


# What TFDS names the dataset metadata it stores next to a built version (MetadataDict).
DATASET_METADATA_FILE = "metadata.json"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def dataset_metadata(config: dict, data_dir: str | None) -> tuple[dict | None, Path | None]:
    """The built dataset's ``metadata.json`` (split counts, de-duplication), if it can be found.

    Looked for under ``data_dir``, the data dirs the run recorded, then the default data dir.
    """
    from tumorlib.data.pipeline import DATASET_NAME
    from tumorlib.data.pipeline import data_dir as default_data_dir

    ds = config.get("dataset", {})
    roots = [data_dir, ds.get("data_dir"), config.get("data_dir"), str(default_data_dir())]
    for root in filter(None, roots):
        path = (
            Path(root)
            / ds.get("name", DATASET_NAME)
            / ds.get("config", "clean")
            / ds.get("version", "1.0.0")
            / DATASET_METADATA_FILE
        )
        meta = _read_json(path)
        if meta is not None:
            return meta, path
    return None, None


def read_card_inputs(run_path: str | os.PathLike, data_dir: str | None = None) -> CardInputs:
    """Everything the card reports, from the run folder and the dataset's metadata."""
    from tumorlib.data.pipeline import DATASET_NAME

    run = Path(run_path)
    config = _read_json(run / CONFIG_FILE)
    if config is None:
        raise RunNotFoundError(f"{run} has no readable {CONFIG_FILE}; is it a run folder?")
    evals = {
        p.parent.name: _read_json(p) for p in sorted((run / EVAL_DIR).glob(f"*/{METRICS_FILE}"))
    }
    meta, meta_path = dataset_metadata(config, data_dir)
    return CardInputs(
        run=run,
        config=config,
        dataset_name=DATASET_NAME,
        calibration=_read_json(run / CALIBRATION_FILE) or {},
        abstention=_read_json(run / ABSTENTION_FILE),
        gate=_read_json(run / GATE_SUMMARY_FILE),
        evals=evals,
        meta=meta,
        meta_path=meta_path,
    )


def build_card(run_path: str | os.PathLike, data_dir: str | None = None) -> str:
    """The model card as Markdown (figures referenced relative to the run folder)."""
    card = read_card_inputs(run_path, data_dir)
    return "\n".join(line for section in SECTIONS for line in section(card))


def render_html(markdown_text: str, title: str) -> str:
    """A self-contained HTML page (Python-Markdown with tables)."""
    import html

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;max-width:60em;"
        "margin:2em auto;padding:0 1em;line-height:1.45}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .6em}img{max-width:100%}"
        "blockquote{border-left:4px solid #c00;margin:0;padding:.2em 1em;background:#fee}"
        f"</style></head><body>\n{body}\n</body></html>\n"
    )


def write_card(run_path: str | os.PathLike, data_dir: str | None = None) -> tuple[Path, Path]:
    """Write ``model_card.md`` and ``model_card.html`` into the run folder."""
    run = Path(run_path)
    text = build_card(run, data_dir)
    md_path, html_path = run / CARD_MD, run / CARD_HTML
    md_path.write_text(text + "\n")
    html_path.write_text(render_html(text, f"Model card: {run.name}"))
    return md_path, html_path


def main(argv: list[str] | None = None) -> int:
    """Write the card from the command line (exit 1 if the run folder is unusable)."""
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.model_card",
        description="Write RUN/model_card.md and RUN/model_card.html from the run's outputs.",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir of the dataset")
    args = parser.parse_args(argv)

    def body() -> None:
        md_path, html_path = write_card(args.run, args.data_dir)
        print(f"wrote {md_path} and {html_path}")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
