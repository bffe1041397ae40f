"""The model card is built from a run's files: bootstrap intervals agree with scikit-learn, every
section appears with the measured numbers, and missing measurements are said to be missing."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from tests.fixtures.serving import make_fixture_run
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.runs import write_json
from tumorlib.evaluation.bootstrap import bootstrap_metrics
from tumorlib.evaluation.model_card import main
from tumorlib.safety.abstention import choose_class_thresholds, choose_threshold, evaluate_threshold
from tumorlib.safety.gate import evaluate_gate, fit_gate


def noisy_predictions(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    probs = rng.dirichlet(np.ones(4), n) * 0.5
    probs[np.arange(n), np.where(rng.random(n) < 0.85, labels, rng.integers(0, 4, n))] += 0.5
    return probs, labels


def test_bootstrap_point_values_match_sklearn_and_intervals_bracket_them():
    from sklearn.metrics import classification_report

    probs, labels = noisy_predictions()
    predicted = probs.argmax(1)
    boot = bootstrap_metrics(labels, predicted, samples=200)
    report = classification_report(labels, predicted, output_dict=True, zero_division=0)
    assert boot["accuracy"]["value"] == pytest.approx(report["accuracy"])
    assert boot["macro_f1"]["value"] == pytest.approx(report["macro avg"]["f1-score"])
    for i, name in enumerate(CLASS_NAMES):
        got, want = boot["per_class"][name], report[str(i)]
        assert got["recall"]["value"] == pytest.approx(want["recall"])
        assert got["support"] == want["support"]
    for t in [boot["accuracy"], boot["macro_f1"]] + [
        m for c in boot["per_class"].values() for m in (c["precision"], c["recall"], c["f1"])
    ]:
        assert t["low"] <= t["value"] <= t["high"] and t["high"] - t["low"] > 0
    perfect = bootstrap_metrics(labels, labels, samples=50)
    assert perfect["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    with pytest.raises(ValueError, match="non-zero"):
        bootstrap_metrics([], [])


def test_card_from_a_complete_run(tmp_path, capsys):
    run = make_fixture_run(tmp_path / "runs" / "fx")
    probs, labels = noisy_predictions()
    (run / "safety").mkdir()
    np.savez(run / "safety" / "test_predictions.npz", probabilities=probs, labels=labels)
    chosen = choose_threshold(probs[:150], labels[:150], target_precision=0.95)
    test = evaluate_threshold(probs[150:], labels[150:], chosen.threshold)
    per_class = choose_class_thresholds(probs[:150], labels[:150], target_precision=0.95)
    per_class_test = evaluate_threshold(probs[150:], labels[150:], per_class.thresholds)
    write_json(
        run / "abstention.json",
        {
            "rule": "per_class",
            "chosen_on_validation": asdict(chosen),
            "test": asdict(test),
            "plot": "safety/rc.png",
            "per_class": {
                "chosen_on_validation": asdict(per_class),
                "test": asdict(per_class_test),
                "thresholds_by_class": dict(zip(CLASS_NAMES, per_class.thresholds)),
            },
            "second_source": {
                "n": 658,
                "single": {"coverage": 0.5, "answered_tumour_vs_no_tumour_accuracy": 0.99},
                "per_class": {"coverage": 0.875, "answered_tumour_vs_no_tumour_accuracy": 0.985},
            },
        },
    )
    (run / "safety" / "rc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    rng = np.random.default_rng(1)
    gate = fit_gate(
        {"out_relu": rng.normal(size=(200, 4))}, {"out_relu": rng.normal(size=(100, 4))}
    )
    gate_report = evaluate_gate(
        gate,
        {"out_relu": rng.normal(size=(100, 4))},
        {"noise": {"out_relu": rng.normal(9, 1, (20, 4))}},
    )
    gate_report["familiarity"] = {"test_unfamiliar_rate": 0.02, "test_changed_unfamiliar_rate": 0.4}
    gate_report["second_source"] = {
        "rejected_as_not_brain_mri": {"rate": 0.006, "n": 658},
        "unfamiliar": {"rate": 0.31, "n": 658},
    }
    write_json(run / "input_gate.json", gate_report)
    data_dir = tmp_path / "tfds"
    meta_dir = data_dir / "brain_mri" / "clean" / "1.0.0"
    meta_dir.mkdir(parents=True)
    counts = {s: {c: 10 + i for i, c in enumerate(CLASS_NAMES)} for s in ("train", "test")}
    (meta_dir / "metadata.json").write_text(
        json.dumps(
            {
                "num_groups": 1781,
                "near_duplicate_cosine": 0.95,
                "conflicting_groups": 10,
                "removed_exact_duplicate": {"glioma": 24},
                "removed_label_conflict": {"glioma": 88},
                "counts": counts,
            }
        )
    )

    assert main([str(run), "--data-dir", str(data_dir)]) == 0
    md = (run / "model_card.md").read_text()
    for heading in (
        "## Data and de-duplication",
        "## Intended use",
        "## Out-of-scope use",
        "## Performance",
        "## Calibration",
        "## Abstention",
        "## Input gate",
        "## Limitations",
    ):
        assert heading in md
    boot = bootstrap_metrics(labels, probs.argmax(1))
    assert f"Accuracy {boot['accuracy']['value']:.3f} ({boot['accuracy']['low']:.3f}" in md
    assert "1781 groups" in md and "24 exact duplicates" in md and "| **total** | 46 | 46 |" in md
    assert f"**{chosen.threshold:.4f}**" in md and f"{100 * test.coverage:.1f} %" in md
    assert f"**{100 * gate_report['test_false_rejection_rate']:.1f} %**" in md
    assert "![risk-coverage](safety/rc.png)" in md
    assert "**Served:** one threshold per predicted class" in md
    assert f"test coverage **{100 * per_class_test.coverage:.1f} %**" in md
    assert "per-class rule: answered 87.5 %, 98.5 % right on tumour vs no tumour" in md
    assert "**0.6 %** refused as not a brain MRI (n=658)" in md
    assert "Flagged: 2.0 % of the test split, 40.0 % of its acquisition-changed copy" in md
    assert "31.0 % of the second source" in md
    assert f"`out_relu` (threshold {gate.layers[0].threshold:.1f}" in md and "noise 100.0 %" in md
    for limitation in ("2-D slices only", "Single public source", "No patient IDs"):
        assert limitation in md
    html = (run / "model_card.html").read_text()
    assert "<table>" in html and "<h2>Limitations</h2>" in html


def test_card_says_what_is_not_measured_and_missing_run_is_an_error(tmp_path, capsys):
    run = make_fixture_run(tmp_path / "runs" / "bare")
    assert main([str(run), "--data-dir", str(tmp_path / "nowhere")]) == 0
    md = (run / "model_card.md").read_text()
    assert md.count("Not yet measured") >= 2 and "not yet measured" in md
    assert main([str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_an_ensemble_run_names_its_members_on_the_card():
    from tumorlib.evaluation.model_card_sections import ensemble_lines

    ensemble = {
        "members": [{"run": "/x/runs/s320", "image_size": 320, "seed": 42},
                    {"run": "/x/runs/s384", "image_size": 384, "seed": 42}],
        "tta": "horizontal flip",
        "combination": "mean of softmax probabilities",
    }  # fmt: skip
    (line,) = ensemble_lines(ensemble)
    assert "320 px (run `s320`, seed 42)" in line and "384 px (run `s384`" in line
    assert "mirrored" in line
    assert "mirrored" not in ensemble_lines({**ensemble, "tta": None})[0]
    assert ensemble_lines(None) == []


def test_a_multi_sequence_run_names_its_sources_licences_and_figures_per_source(tmp_path):
    from tumorlib.evaluation.by_source import metrics_by_stratum
    from tumorlib.evaluation.model_card_sources import SOURCE_CHECKS_DIR

    run = make_fixture_run(tmp_path / "runs" / "ms")
    config = json.loads((run / "config.json").read_text())
    config["dataset"] = {"name": "brain_mri", "config": "multi_sequence", "version": "1.1.0"}
    write_json(run / "config.json", config)
    labels = np.array([0, 0, 2, 1, 3])
    strata = np.array(["tcga_lgg/flair"] * 3 + ["sartaj"] * 2)
    by = metrics_by_stratum(np.eye(4)[[0, 2, 2, 1, 3]], labels, strata)
    eval_dir = run / "eval" / "multi_sequence-test"
    eval_dir.mkdir(parents=True)
    metrics = {"config": "multi_sequence", "split": "test", "accuracy": 0.8, "macro_f1": 0.7}
    write_json(eval_dir / "metrics.json", {**metrics, "by_source": by})
    check = run / "safety" / SOURCE_CHECKS_DIR / "archive_test"
    check.mkdir(parents=True)
    block = {"n": 5, "not_brain_mri": 0.0, "uncertain": 0.2, "unfamiliar_flag": 0.0,
             "stated": 0.8, "stated_wrong": 0.25}  # fmt: skip
    (check / "source_check.json").write_text(
        json.dumps({"source": "multi_sequence/test", "all": block, "by_collection": {}})
    )
    data_dir = tmp_path / "tfds"
    meta_dir = data_dir / "brain_mri" / "multi_sequence" / "1.1.0"
    meta_dir.mkdir(parents=True)
    per_class = {c: 0 for c in CLASS_NAMES} | {"glioma": 7}
    (meta_dir / "metadata.json").write_text(
        json.dumps({
            "counts": {"train": per_class},
            "counts_by_source": {"train": {"tcga_lgg": {"flair": per_class}}},
            "lgg": {"licence": "CC BY-NC-SA 4.0 (test)", "citation": "Buda et al.",
                    "patients": {"train": 56, "validation": 12, "test": 12}},
        })
    )  # fmt: skip
    assert main([str(run), "--data-dir", str(data_dir)]) == 0
    md = (run / "model_card.md").read_text()
    assert "## Training sources and licences" in md and "CC BY-NC-SA 4.0 (test)" in md
    assert "non-commercial purposes only" in md and "--sartaj-only" in md
    assert "| train | tcga_lgg | flair | 7 | 0 | 0 | 0 | 7 |" in md
    assert "TCGA-LGG patients per split: train 56, validation 12, test 12" in md
    assert "## Performance per source and sequence" in md
    assert "| tcga_lgg/flair | 3 | 0.667 |" in md
    assert "| multi_sequence/test | all | 5 | 0.0 % | 20.0 % | 0.0 % | 80.0 % | 25.0 % |" in md
    assert "FLAIR or pre-contrast T1" in md and "Two public sources" in md
