"""Figures per source and sequence, against counts done by hand."""

from __future__ import annotations

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.evaluation.by_source import metrics_by_stratum, summary_lines

GLIOMA, NO_TUMOR = CLASS_NAMES.index("glioma"), CLASS_NAMES.index("no_tumor")


def test_each_stratum_reports_its_own_recalls_and_calls():
    labels = np.array([GLIOMA, GLIOMA, GLIOMA, NO_TUMOR, GLIOMA, GLIOMA, NO_TUMOR, 1, 3])
    predicted = np.array([GLIOMA, NO_TUMOR, 1, NO_TUMOR, GLIOMA, GLIOMA, GLIOMA, 1, 3])
    strata = np.array(["tcga_lgg/flair"] * 4 + ["tcga_lgg/t1_precontrast"] * 3 + ["sartaj"] * 2)
    by = metrics_by_stratum(np.eye(4)[predicted], labels, strata)
    flair = by["tcga_lgg/flair"]
    assert flair["n"] == 4 and flair["recall"] == {"glioma": 1 / 3, "no_tumor": 1.0}
    assert flair["called"]["glioma"] == {"glioma": 1, "meningioma": 1, "no_tumor": 1,
                                         "pituitary": 0}  # fmt: skip
    # tumour vs no tumour: the meningioma call on a glioma is still "tumour"
    assert flair["tumour_vs_no_tumour_accuracy"] == 3 / 4
    t1 = by["tcga_lgg/t1_precontrast"]
    assert t1["recall"] == {"glioma": 1.0, "no_tumor": 0.0} and t1["accuracy"] == 2 / 3
    assert by["sartaj"]["accuracy"] == 1.0 and set(by["sartaj"]["recall"]) == {
        "meningioma",
        "pituitary",
    }
    table = "\n".join(summary_lines(by))
    assert "| tcga_lgg/flair | 4 | 0.500 | 0.750 | 0.333 |  | 1.000 |  |" in table
