"""Comparing runs: the validation score's two equal parts and the no-tumour trade-off."""

from __future__ import annotations

import numpy as np
import pytest

from tumorlib.evaluation.compare_runs import FLAIR, T1, figures, scaled, tradeoff


def one_hot(labels, classes=4, confidence=0.7):
    p = np.full((len(labels), classes), (1 - confidence) / (classes - 1))
    p[np.arange(len(labels)), labels] = confidence
    return p


def test_the_score_weighs_sartaj_and_the_archive_equally():
    # SARTAJ: 4 slices, 3 right. Archive: FLAIR gliomas 2/2, T1 gliomas 1/2, no-tumour 0/2.
    labels = np.array([0, 1, 2, 3, 0, 0, 0, 0, 2, 2])
    said = np.array([0, 1, 2, 0, 0, 0, 0, 1, 0, 0])
    strata = np.array(["sartaj"] * 4 + [FLAIR, FLAIR, T1, T1, FLAIR, T1])
    out = figures(one_hot(said), labels, strata)
    assert out["sartaj_accuracy"] == 0.75 and out["sartaj_min_recall"] == 0.0
    assert out["flair_glioma_recall"] == 1.0 and out["t1_glioma_recall"] == 0.5
    assert out["archive_no_tumour_recall"] == 0.0
    assert out["score"] == pytest.approx((0.75 + 1.5 / 3) / 2)


def test_scaling_no_tumour_moves_borderline_slices_and_validation_picks_the_factor():
    # Archive gliomas the model half calls "no tumour": a factor < 1 wins them back.
    probs = np.array([[0.45, 0.05, 0.48, 0.02]] * 4 + [[0.05, 0.05, 0.85, 0.05]] * 2)
    labels = np.array([0, 0, 0, 0, 2, 2])
    strata = np.array([FLAIR, FLAIR, T1, T1, FLAIR, T1])
    sartaj = {"p": one_hot(np.arange(4)), "y": np.arange(4), "strata": np.array(["sartaj"] * 4)}
    split = {
        "p": np.concatenate([sartaj["p"], probs]),
        "y": np.concatenate([sartaj["y"], labels]),
        "strata": np.concatenate([sartaj["strata"], strata]),
    }
    assert np.allclose(scaled(probs, 0.5).sum(1), 1.0)
    halved = figures(scaled(split["p"], 0.5), split["y"], split["strata"])
    assert halved["flair_glioma_recall"] == 1.0 and halved["archive_no_tumour_recall"] == 1.0
    assert figures(split["p"], split["y"], split["strata"])["flair_glioma_recall"] == 0.0
    curve = tradeoff(split, split)
    assert curve["validation_pick"] < 1.0
    at_one = next(r for r in curve["rows"] if r["factor"] == pytest.approx(1.0))
    assert at_one["validation"]["score"] < max(r["validation"]["score"] for r in curve["rows"])
