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
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.classes import CLASS_NAMES, DISPLAY_NAMES

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
BOOTSTRAP_SAMPLES = 1000
CONFIDENCE_LEVEL = 0.95


def bootstrap_metrics(
    labels: np.ndarray,
    predicted: np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, Any]:
    """Point estimates and percentile bootstrap intervals (resampling test images).

    Returns ``{"accuracy": {...}, "macro_f1": {...}, "per_class": {name: {"precision": {...},
    "recall": {...}, "f1": {...}, "support": n}}}`` where each ``{...}`` is ``{"value", "low",
    "high"}``. Macro-F1 averages all four classes (scikit-learn's ``labels=`` all classes).
    """
    labels = np.asarray(labels, dtype=int)
    predicted = np.asarray(predicted, dtype=int)
    if len(labels) == 0 or len(labels) != len(predicted):
        raise ValueError(
            f"need equal, non-zero numbers of labels and predictions "
            f"({len(labels)} vs {len(predicted)})"
        )
    k = len(CLASS_NAMES)

    def compute(cells: np.ndarray) -> np.ndarray:
        """Metrics from confusion-matrix cell indices ``label * k + predicted``, rows = resamples.

        Counting cells with ``bincount`` makes 1,000 resamples take milliseconds; the formulas
        are scikit-learn's (``zero_division=0``), which the tests check.
        """
        cm = np.stack([np.bincount(row, minlength=k * k) for row in cells]).reshape(-1, k, k)
        tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
        pred_n, true_n = cm.sum(axis=1), cm.sum(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(pred_n > 0, tp / pred_n, 0.0)
            rec = np.where(true_n > 0, tp / true_n, 0.0)
            f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
        accuracy = tp.sum(axis=1) / cm.sum(axis=(1, 2))
        return np.column_stack([accuracy, f1.mean(axis=1), prec, rec, f1])

    cells = labels * k + predicted
    point = compute(cells[None])[0]
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = compute(cells[rng.integers(0, n, (samples, n))])
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)

    def triple(i: int) -> dict[str, float]:
        return {"value": float(point[i]), "low": float(low[i]), "high": float(high[i])}

    support = np.bincount(labels, minlength=k)
    return {
        "accuracy": triple(0),
        "macro_f1": triple(1),
        "per_class": {
            name: {
                "precision": triple(2 + c),
                "recall": triple(2 + k + c),
                "f1": triple(2 + 2 * k + c),
                "support": int(support[c]),
            }
            for c, name in enumerate(CLASS_NAMES)
        },
        "samples": samples,
        "level": level,
    }


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def dataset_metadata(config: dict, data_dir: str | None) -> tuple[dict | None, Path | None]:
    """The built dataset's ``metadata.json`` (split counts, de-duplication), if it can be found."""
    ds = config.get("dataset", {})
    roots = [
        data_dir,
        ds.get("data_dir"),
        config.get("data_dir"),
        os.environ.get("TFDS_DATA_DIR"),
        str(Path(__file__).resolve().parents[1] / "data" / "tensorflow_datasets"),
    ]
    for root in filter(None, roots):
        path = (
            Path(root)
            / ds.get("name", "brain_mri")
            / ds.get("config", "clean")
            / ds.get("version", "1.0.0")
            / "metadata.json"
        )
        meta = _read_json(path)
        if meta is not None:
            return meta, path
    return None, None


def _ci(t: dict[str, float]) -> str:
    return f"{t['value']:.3f} ({t['low']:.3f}–{t['high']:.3f})"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f} %"


def _counts_table(counts: dict[str, dict[str, int]]) -> list[str]:
    splits = list(counts)
    lines = ["| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name in CLASS_NAMES:
        lines.append(
            f"| {DISPLAY_NAMES[name]} | "
            + " | ".join(str(counts[s].get(name, 0)) for s in splits)
            + " |"
        )
    lines.append("| **total** | " + " | ".join(str(sum(counts[s].values())) for s in splits) + " |")
    return lines


def _figure(run: Path, rel: str, caption: str) -> list[str]:
    return [f"![{caption}]({rel})", ""] if (run / rel).is_file() else []


def _ensemble_lines(ensemble: dict | None) -> list[str]:
    """One line naming an ensemble's members (tumorlib.ensemble); nothing for a single run."""
    if not ensemble:
        return []
    members = ", ".join(
        f"{m['image_size']} px (run `{Path(m['run']).name}`, seed {m.get('seed')})"
        for m in ensemble["members"]
    )
    tta = ", each also on the left-right mirrored slice (TTA)" if ensemble.get("tta") else ""
    return [f"- Ensemble members: {members}; {ensemble['combination']}{tta}."]


def build_card(run_path: str | os.PathLike, data_dir: str | None = None) -> str:
    """The model card as Markdown (figures referenced relative to the run folder)."""
    from tumorlib.runs import CALIBRATION_FILE, CONFIG_FILE, EVAL_DIR, RunNotFoundError

    run = Path(run_path)
    config = _read_json(run / CONFIG_FILE)
    if config is None:
        raise RunNotFoundError(f"{run} has no readable {CONFIG_FILE}; is it a run folder?")
    calibration = _read_json(run / CALIBRATION_FILE) or {}
    abstention = _read_json(run / "abstention.json")
    gate = _read_json(run / "input_gate.json")
    evals = {p.parent.name: _read_json(p) for p in sorted((run / EVAL_DIR).glob("*/metrics.json"))}
    meta, meta_path = dataset_metadata(config, data_dir)
    ds = config.get("dataset", {})
    today = dt.date.today().isoformat()

    md: list[str] = [f"# Model card: brain MRI tumour classifier (run `{run.name}`)", ""]
    md += [
        f"*Generated {today} by `python -m tumorlib.model_card` from the run's own outputs.*",
        "",
    ]
    md += [
        "> **Decision support only — not a diagnosis.** Every result must be reviewed by a "
        "qualified radiologist.",
        "",
    ]

    md += ["## Model", ""]
    md += [
        f"- Architecture: {config.get('architecture', 'MobileNetV2 -> pooling -> head')}; "
        f"width multiplier α = {config.get('alpha')}, input {config.get('image_size')}×"
        f"{config.get('image_size')} RGB (grayscale slices replicated), normalised to [-1, 1].",
        *_ensemble_lines(config.get("ensemble")),
        f"- Starting weights: {config.get('weights')}.",
        f"- Head: dropout {config.get('dropout')}, hidden units {config.get('head_units')}; "
        f"label smoothing {config.get('label_smoothing', 'n/a')}; seed {config.get('seed')}.",
        f"- Classes: {', '.join(DISPLAY_NAMES[c] for c in CLASS_NAMES)}.",
        f"- Temperature scaling: T = {calibration.get('temperature', 1.0):.3f} "
        f"(fitted on {calibration.get('fitted_on', 'the validation split')}).",
        "",
    ]

    md += ["## Data and de-duplication", ""]
    md += [
        f"Dataset `{ds.get('name', 'brain_mri')}` config `{ds.get('config', 'clean')}` "
        f'version {ds.get("version", "?")}: the public SARTAJ "Brain Tumor Classification '
        '(MRI)" collection of 2-D JPEG slices (Kaggle), a single public source with no '
        "patient identifiers.",
        "",
    ]
    if meta:
        removed_exact = sum(meta.get("removed_exact_duplicate", {}).values())
        removed_conflict = sum(meta.get("removed_label_conflict", {}).values())
        md += [
            f"The published train/test folders share many identical and near-identical "
            f"images, so the `clean` config groups near-duplicates (cosine similarity ≥ "
            f"{meta.get('near_duplicate_cosine', '?')} of thumbnails) into "
            f"{meta.get('num_groups', '?')} groups and splits by group, so no image has a "
            f"copy across splits. {removed_exact} exact duplicates were dropped and "
            f"{removed_conflict} images removed from {meta.get('conflicting_groups', '?')} "
            f"groups whose copies carried conflicting labels. Split seed "
            f"{meta.get('split_seed', '?')}.",
            "",
        ]
        if meta.get("counts"):
            md += _counts_table(meta["counts"]) + [""]
        md += [f"(Source: `{meta_path}`.)", ""]
    else:
        md += ["Dataset metadata (`metadata.json`) not found; pass `--data-dir`.", ""]

    md += [
        "## Intended use",
        "",
        "- Decision support for clinicians reviewing single axial/coronal/sagittal T1-weighted "
        "contrast-enhanced brain MRI slices, to flag a likely tumour type for review.",
        "- Research and teaching on trustworthy medical image classification.",
        "",
        "## Out-of-scope use",
        "",
        "- Diagnosis, treatment or triage decisions without a radiologist.",
        "- Whole 3-D studies, other sequences or body parts, children's scans, post-operative "
        "images, or tumour types other than the three classes (the model always answers one "
        "of its four classes; the input gate and abstention reduce but do not remove this).",
        "- Any population or scanner not represented in the source collection.",
        "",
    ]

    md += ["## Performance", ""]
    preds = run / "safety" / "test_predictions.npz"
    if preds.is_file():
        with np.load(preds) as z:
            probs, labels = z["probabilities"], z["labels"]
        boot = bootstrap_metrics(labels, probs.argmax(axis=1))
        md += [
            f"`{ds.get('config', 'clean')}` test split, {len(labels)} slices; "
            f"{int(100 * boot['level'])} % percentile bootstrap intervals "
            f"({boot['samples']} resamples):",
            "",
            f"- Accuracy {_ci(boot['accuracy'])}; macro-F1 {_ci(boot['macro_f1'])}.",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for name, m in boot["per_class"].items():
            md.append(
                f"| {DISPLAY_NAMES[name]} | {_ci(m['precision'])} | {_ci(m['recall'])} | "
                f"{_ci(m['f1'])} | {m['support']} |"
            )
        md.append("")
    else:
        md += [
            "Confidence intervals need the test predictions "
            "(`python -m tumorlib.abstention RUN` writes them): not yet measured.",
            "",
        ]
    if evals:
        md += [
            "All evaluations (`python -m tumorlib.evaluate`):",
            "",
            "| evaluation | accuracy | macro-F1 |",
            "|---|---|---|",
        ]
        for key, m in evals.items():
            if m:
                md.append(
                    f"| {key} | {m.get('accuracy', float('nan')):.3f} | "
                    f"{m.get('macro_f1', float('nan')):.3f} |"
                )
        md.append("")
        for key in evals:
            for png, caption in (
                ("confusion_matrix.png", "confusion matrix"),
                ("roc_curves.png", "ROC curves"),
            ):
                md += _figure(run, f"eval/{key}/{png}", f"{key} {caption}")

    md += ["## Calibration", ""]
    if "ece_before" in calibration:
        md += [
            f"Expected calibration error on validation: {calibration['ece_before']:.3f} before "
            f"and {calibration['ece_after']:.3f} after temperature scaling "
            f"(T = {calibration['temperature']:.3f}).",
            "",
        ]
    else:
        md += ["Not yet measured.", ""]
    for key in evals:
        md += _figure(run, f"eval/{key}/reliability_diagram.png", f"{key} reliability diagram")

    md += ['## Abstention ("uncertain — refer to a radiologist")', ""]
    if abstention:
        c, t = abstention["chosen_on_validation"], abstention["test"]
        md += [
            f"Threshold on temperature-scaled confidence, chosen on validation for accepted "
            f"precision ≥ {c['target_precision']}: **{c['threshold']:.4f}** (validation "
            f"coverage {_pct(c['coverage'])}, precision {_pct(c['precision'])}"
            + ("" if c["reachable"] else "; target unreachable — everything is refused")
            + ").",
            "",
            f"On the test split: coverage **{_pct(t['coverage'])}**, accuracy of accepted "
            f"predictions **{_pct(t['accepted_accuracy'])}** ({t['errors_accepted']} errors "
            f"among {t['accepted']} of {t['total']}), against {_pct(t['overall_accuracy'])} "
            "without abstention.",
            "",
        ]
        md += _figure(run, abstention.get("plot", "safety/risk_coverage.png"), "risk-coverage")
    else:
        md += ["Not yet measured (`python -m tumorlib.abstention RUN`).", ""]

    md += ["## Input gate (non-MRI inputs)", ""]
    if gate:
        layer_text = "; ".join(
            f"`{g['layer']}` (threshold {g['threshold']:.1f}, Ledoit–Wolf shrinkage "
            f"{g['shrinkage']:.3f})"
            for g in gate.get("layers", [])
        )
        md += [
            "An image is classified only if, for every gated backbone layer, the Mahalanobis "
            "distance of its pooled activations to the training distribution is within a "
            f"threshold set on validation: {layer_text}. Combined false-rejection target on "
            f"validation {_pct(gate['false_rejection_target_on_validation'])}.",
            "",
            f"- False rejection on the test split: **{_pct(gate['test_false_rejection_rate'])}**"
            f" ({gate['test_rejected']} of {gate['test_total']}).",
            f"- Rejection of generated/packaged non-MRI images: "
            f"**{_pct(gate['negative_rejection_rate'])}** of {gate['negatives_total']}: "
            + ", ".join(
                f"{k} {_pct(v['rate'])} (n={v['n']})"
                for k, v in gate["negative_rejection_by_kind"].items()
            )
            + ".",
            "",
        ]
        md += _figure(run, gate.get("plot", "safety/input_gate.png"), "input gate distances")
        md += [
            "No chest X-rays, CT or other-body-part MRI were available offline to test "
            "against; rejection of those is unmeasured.",
            "",
        ]
    else:
        md += ["Not yet measured (`python -m tumorlib.input_gate RUN`).", ""]

    md += [
        "## Limitations",
        "",
        "- **2-D slices only**: each slice is classified alone; a radiologist reads the whole "
        "study, several sequences and the clinical history.",
        "- **Single public source**: one Kaggle collection of JPEG exports, of unknown "
        "scanners, protocols and populations; performance elsewhere is unknown and likely "
        "lower. No external validation.",
        "- **No patient IDs**: slices of one patient may sit in different splits despite "
        "near-duplicate grouping, so test figures may be optimistic.",
        "- Labels come from the collection, not from histopathology we could verify; some "
        "source images carried conflicting labels and were removed.",
        "- Three tumour types only; every other finding is forced into one of four classes "
        "unless abstention or the gate stops it.",
        "- Grad-CAM heatmaps show where the model looked, at 1/32 of the input resolution; "
        "they are not segmentations and can highlight non-anatomical cues.",
        "",
    ]
    return "\n".join(md)


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
    run = Path(run_path)
    text = build_card(run, data_dir)
    md_path, html_path = run / CARD_MD, run / CARD_HTML
    md_path.write_text(text + "\n")
    html_path.write_text(render_html(text, f"Model card: {run.name}"))
    return md_path, html_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.model_card",
        description="Write RUN/model_card.md and RUN/model_card.html from the run's outputs.",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir of the dataset")
    args = parser.parse_args(argv)
    from tumorlib.runs import RunNotFoundError

    try:
        md_path, html_path = write_card(args.run, args.data_dir)
    except (RunNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {md_path} and {html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
