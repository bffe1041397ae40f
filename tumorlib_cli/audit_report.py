"""What ``tumorlib audit performance|drift|export|purge|dataset`` print and write.

Every figure is printed with its 95% bootstrap interval and the count behind it, so a small
sample is never read as a precise one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from serving.audit.config import AuditSettings
from serving.audit.drift import drift_report, flagged
from serving.audit.exports import export_dataset, export_records, open_private, private_dir
from serving.audit.performance import performance_by_version, reliability_png_bytes
from serving.audit.queries import model_references, predictions_frame
from serving.audit.store import AuditStore
from tumorlib.contracts.classes import CLASS_NAMES


def figure(value: dict[str, Any]) -> str:
    """``88.0% (95% CI 80.0–94.7%, n=75)``, or ``n/a (n=0)``."""
    if value["value"] is None:
        return f"n/a (n={value['n']})"
    return f"{value['value']:.1%} (95% CI {value['low']:.1%}–{value['high']:.1%}, n={value['n']})"


def performance_lines(name: str, version: int, figures: dict[str, Any]) -> list[str]:
    counts, reference = figures["counts"], figures["reference"]
    card = reference.get("test_accuracy")
    lines = [
        f"{name} version {version}: {counts['predictions']} predictions, "
        f"{counts['with_feedback']} with feedback ({counts['scored']} scored, "
        f"{counts['not_assessable']} not assessable, {counts['refused_by_gate']} refused by gate)",
        f"  agreement (accuracy): {figure(figures['accuracy'])}; model card clean-test "
        + (f"{card:.1%}" if card is not None else "not recorded"),
        f"  accuracy on accepted answers: {figure(figures['accepted_accuracy'])}",
        f"  refer rate (abstained): {figure(figures['refer_rate'])}",
        f"  refused by the input gate: {figure(figures['gate_refusal_rate'])}",
    ]
    lines += [f"  recall {c}: {figure(figures['recall'][c])}" for c in CLASS_NAMES]
    lines.append("  confusion matrix (rows: radiologist, columns: model; " + ", ".join(CLASS_NAMES))
    lines += [f"    {row}" for row in figures["confusion_matrix"]]
    if figures["flag"]:
        lines.append(f"  FLAG: {figures['flag']}")
    return lines


def performance(store: AuditStore, args: argparse.Namespace, _settings: AuditSettings) -> int:
    results = performance_by_version(store, seed=args.seed)
    if not results:
        print("no predictions recorded yet")
        return 0
    if args.output_dir:
        private_dir(args.output_dir)  # 0700; files 0600: records about patients' images
    for (name, version), figures in sorted(results.items()):
        print("\n".join(performance_lines(name, version, figures)))
        if args.output_dir:
            png = args.output_dir / f"reliability-{name}-v{version}.png"
            title = f"{name} v{version}: reliability"
            with open_private(png, "wb") as handle:
                handle.write(reliability_png_bytes(figures["reliability"], title))
            print(f"  reliability diagram: {png}")
    if args.output_dir:
        payload = {f"{n}/{v}": f for (n, v), f in results.items()}
        with open_private(args.output_dir / "performance.json") as handle:
            handle.write(json.dumps(payload, indent=2) + "\n")
    return 0


def drift(store: AuditStore, args: argparse.Namespace, _settings: AuditSettings) -> int:
    predictions = predictions_frame(store)
    references = model_references(store)
    if predictions.empty:
        print("no predictions recorded yet")
        return 0
    for (name, version), group in predictions.groupby(["model_name", "model_version"]):
        report = drift_report(group, references.get((name, int(version))), period=args.period)
        print(f"{name} version {int(version)}: " + report.get("test", report.get("message", "")))
        for row in report["periods"]:
            parts = []
            for q in ("confidence", "gate_score"):
                r = row.get(q) or {}
                if r.get("p_value") is not None:
                    mark = " FLAG" if r["flag"] else ""
                    median = r["live"]["median"]
                    parts.append(f"{q} KS={r['ks']:.3f} p={r['p_value']:.2g} median={median:.3f}"
                                 f"{mark}")  # fmt: skip
                else:
                    parts.append(f"{q}: {r.get('note', 'n/a')}")
            print(f"  {row['period']} (n={row['n']}): " + "; ".join(parts))
        if flagged(report):
            print("  shift flagged: " + ", ".join(flagged(report)))
    return 0


def export(store: AuditStore, args: argparse.Namespace, _settings: AuditSettings) -> int:
    counts = export_records(store, args.output, before=args.before)
    print(f"exported to {args.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def purge(store: AuditStore, args: argparse.Namespace, settings: AuditSettings) -> int:
    before = args.before or dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.retention_days)
    counts = store.purge(before)
    print(f"purged records before {before.isoformat()}: " + json.dumps(counts))
    return 0


def dataset(store: AuditStore, args: argparse.Namespace, _settings: AuditSettings) -> int:
    counts = export_dataset(store, args.output, split=args.split)
    print(f"confirmed cases written to {args.output}: " + json.dumps(counts))
    return 0


ACTIONS: dict[str, Callable[[AuditStore, argparse.Namespace, AuditSettings], int]] = {
    "performance": performance,
    "drift": drift,
    "export": export,
    "purge": purge,
    "dataset": dataset,
}
