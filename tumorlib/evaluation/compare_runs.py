"""Compare training runs the way the recipe is chosen: on validation, per source.

A mixed split's accuracy would let SARTAJ's 438 validation slices outvote the archive's
patients, so the **validation score** that chooses a recipe is the mean of two equal parts:
SARTAJ accuracy, and the mean of the archive's three figures (glioma recall on FLAIR, on
pre-contrast T1, and no-tumour-in-slice recall). Test and the second source are reported, never
used to choose.

``python -m tumorlib.evaluation.compare_runs RUN... [--data-dir DIR] [--out DIR]`` prints a
Markdown table and writes ``compare_runs.json`` and ``tradeoff.png`` into ``--out``: the best
run by validation score with its "no tumour" probability scaled by a factor (the one knob that
moves archive gliomas against no-tumour slices without retraining) — SARTAJ accuracy and the
archive's figures on test as the factor moves, validation's pick marked. Each run's predictions
are kept in ``RUN/eval/compare/`` so a second comparison costs nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.runs import load_run

CONFIG = "multi_sequence"
GLIOMA, NO_TUMOR = CLASS_NAMES.index("glioma"), CLASS_NAMES.index("no_tumor")
FLAIR, T1 = "tcga_lgg/flair", "tcga_lgg/t1_precontrast"
FACTORS = np.geomspace(0.125, 8.0, 25)


def predictions(run_path: Path, split: str, data_dir: str | None) -> dict[str, np.ndarray]:
    """Probabilities, labels and strata of ``multi_sequence/split`` (cached in the run)."""
    cache = run_path / "eval" / "compare" / f"{split}.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return {key: saved[key] for key in saved.files}
    from tumorlib.evaluation.by_source import split_strata
    from tumorlib.evaluation.predictions import predict_split
    from tumorlib.model.loading import load_run_model

    run = load_run(run_path)
    model = load_run_model(run)
    probs, labels = predict_split(
        model, split, CONFIG, data_dir, image_size=run.image_size, verbose=0
    )
    strata = split_strata(split, CONFIG, data_dir)["stratum"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, p=probs, y=labels, strata=strata)
    return {"p": probs, "y": labels, "strata": strata}


def figures(probs: np.ndarray, labels: np.ndarray, strata: np.ndarray) -> dict[str, float]:
    """SARTAJ accuracy, macro-F1 and lowest recall; the archive's three figures; the score."""
    from sklearn.metrics import f1_score

    predicted = probs.argmax(1)
    sartaj = strata == "sartaj"
    recalls = [np.mean(predicted[sartaj & (labels == c)] == c) for c in range(len(CLASS_NAMES))]

    def recall(mask: np.ndarray, c: int) -> float:
        return float(np.mean(predicted[mask & (labels == c)] == c))

    out = {
        "sartaj_accuracy": float(np.mean(predicted[sartaj] == labels[sartaj])),
        "sartaj_macro_f1": float(f1_score(labels[sartaj], predicted[sartaj], average="macro")),
        "sartaj_min_recall": float(min(recalls)),
        "flair_glioma_recall": recall(strata == FLAIR, GLIOMA),
        "t1_glioma_recall": recall(strata == T1, GLIOMA),
        "archive_no_tumour_recall": recall(~sartaj, NO_TUMOR),
    }
    archive = (
        out["flair_glioma_recall"] + out["t1_glioma_recall"] + out["archive_no_tumour_recall"]
    ) / 3
    out["score"] = (out["sartaj_accuracy"] + archive) / 2
    return out


def scaled(probs: np.ndarray, factor: float) -> np.ndarray:
    """The "no tumour" probability times ``factor``, renormalised."""
    out = probs.copy()
    out[:, NO_TUMOR] *= factor
    return out / out.sum(1, keepdims=True)


def tradeoff(val: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, Any]:
    """Figures on validation and test along :data:`FACTORS`; validation's best factor."""
    rows: list[dict[str, Any]] = [
        {
            "factor": float(f),
            "validation": figures(scaled(val["p"], f), val["y"], val["strata"]),
            "test": figures(scaled(test["p"], f), test["y"], test["strata"]),
        }
        for f in FACTORS
    ]
    best = max(rows, key=lambda r: r["validation"]["score"])
    return {"rows": rows, "validation_pick": best["factor"]}


def plot_tradeoff(curve: dict[str, Any], run_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = [r["factor"] for r in curve["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label in (
        ("sartaj_accuracy", "SARTAJ accuracy"),
        ("flair_glioma_recall", "archive FLAIR glioma recall"),
        ("t1_glioma_recall", "archive T1 glioma recall"),
        ("archive_no_tumour_recall", "archive no-tumour recall"),
    ):
        ax.plot(factors, [r["test"][key] for r in curve["rows"]], marker=".", label=label)
    ax.axvline(curve["validation_pick"], color="grey", ls="--", label="validation's pick")
    ax.set_xscale("log", base=2)
    ax.set_xlabel('"no tumour" probability x factor')
    ax.set_ylabel("test")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{run_name}: tumour vs no-tumour trade-off on multi_sequence/test")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: one row per run, validation first."""
    lines = [
        "| run | val score | val SARTAJ | val FLAIR gl / T1 gl / archive no-tumour | "
        "test SARTAJ acc / macro-F1 / min recall | test FLAIR gl / T1 gl / archive no-tumour |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        v, t = row["validation"], row["test"]
        lines.append(
            f"| {name} | {v['score']:.3f} | {v['sartaj_accuracy']:.3f} | "
            f"{v['flair_glioma_recall']:.3f} / {v['t1_glioma_recall']:.3f} / "
            f"{v['archive_no_tumour_recall']:.3f} | {t['sartaj_accuracy']:.3f} / "
            f"{t['sartaj_macro_f1']:.3f} / {t['sartaj_min_recall']:.3f} | "
            f"{t['flair_glioma_recall']:.3f} / {t['t1_glioma_recall']:.3f} / "
            f"{t['archive_no_tumour_recall']:.3f} |"
        )
    return lines


def compare(runs: list[str], data_dir: str | None, out: Path) -> dict[str, Any]:
    rows, kept = {}, {}
    for run in runs:
        path = Path(run)
        kept[path.name] = {s: predictions(path, s, data_dir) for s in ("validation", "test")}
        rows[path.name] = {s: figures(**_named(kept[path.name][s])) for s in kept[path.name]}
    best = max(rows, key=lambda name: rows[name]["validation"]["score"])
    curve = tradeoff(kept[best]["validation"], kept[best]["test"])
    out.mkdir(parents=True, exist_ok=True)
    report = {"runs": rows, "best_by_validation": best, "tradeoff": curve}
    (out / "compare_runs.json").write_text(json.dumps(report, indent=1))
    plot_tradeoff(curve, best, out / "tradeoff.png")
    return report


def _named(saved: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"probs": saved["p"], "labels": saved["y"], "strata": saved["strata"]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tumorlib.contracts.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.evaluation.compare_runs",
        description="Runs side by side on multi_sequence validation/test, per source.",
    )
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="reports/compare_runs")
    args = parser.parse_args(argv)

    def body() -> None:
        report = compare(args.runs, args.data_dir, Path(os.fspath(args.out)))
        print("\n".join(table(report["runs"])))
        pick = report["tradeoff"]["validation_pick"]
        print(f"best by validation: {report['best_by_validation']}; no-tumour factor {pick:.3g}")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
