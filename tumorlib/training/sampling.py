"""What one training epoch draws: sources balanced, no patient dominating.

The ``multi_sequence`` train split mixes SARTAJ's slices (no patient ids; near-duplicates already
grouped apart) with the TCGA-LGG archive's, where one patient brings 10-70 neighbouring slices.
Fed as it is, the archive's share of an epoch would be whatever its size happens to be, and a
patient with 70 slices would weigh seven times one with 10. Instead every example gets an
*acceptance probability* (:class:`SamplingPlan`):

* the archive's expected share of an epoch is ``archive_share`` (SARTAJ has the rest);
* within the archive, a patient's expected draws are proportional to ``min(slices, patient_cap)``,
  so no patient contributes more than ``patient_cap`` slices' worth per epoch;
* the largest probability is 1, so an epoch is as long as it can be without repeating slices.

The training pipeline keeps each cached example with its probability on the graph (a stateless
Bernoulli draw, new every epoch, fixed by the seed): :func:`tumorlib.data.pipeline.make_pipeline`'s
``keep``. Phase one (the head on cached features) weights examples by the same probabilities.

The loss weights balance what an epoch draws (:meth:`SamplingPlan.example_weights`): ``"class"``
balances the four classes over the whole epoch (scikit-learn's rule, as before); ``"source_class"``
balances the classes *within each source* — the archive is 85 % glioma, so otherwise "looks like
this collection" would stand in for "glioma" and its no-tumour slices would be called tumours.
On ``clean`` every probability is 1 and ``"class"`` is the class weights of old: nothing changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tumorlib.contracts.classes import NUM_CLASSES

DEFAULT_ARCHIVE_SHARE = 0.3
DEFAULT_PATIENT_CAP = 16
BALANCES = ("class", "source_class")


@dataclass(frozen=True)
class SamplingPlan:
    """Per-example acceptance probabilities of a train split (rows in source order)."""

    probabilities: np.ndarray  # [N] float, max 1
    labels: np.ndarray  # [N] int
    patients: np.ndarray  # [N] str, "" for SARTAJ
    archive_share: float
    patient_cap: int

    @property
    def epoch_size(self) -> int:
        """Expected examples per epoch (the sum of the probabilities)."""
        return int(round(float(self.probabilities.sum())))

    @property
    def samples(self) -> bool:
        """Whether epochs are drawn (some probability below 1) rather than every slice once."""
        return bool((self.probabilities < 1).any())

    def class_weights(self) -> dict[int, float]:
        """Balanced class weights of what an epoch draws: ``n / (k * n_c)`` over expected counts."""
        return _balanced(self.labels, self.probabilities)

    def example_weights(self, balance: str = "class") -> np.ndarray:
        """Per-example loss weights (mean 1 over what an epoch draws), balanced as ``balance``
        says: over the whole epoch (``"class"``) or within each source (``"source_class"``)."""
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        weights = np.ones(len(self.labels))
        groups = [np.ones(len(self.labels), bool)]
        if balance == "source_class":
            archive = self.patients != ""
            groups = [g for g in (~archive, archive) if self.probabilities[g].sum() > 0]
        for group in groups:
            per_class = _balanced(self.labels[group], self.probabilities[group])
            # each source's weights average 1 over its draws: sources keep their epoch shares
            weights[group] = [per_class[c] for c in self.labels[group]]
        return weights / np.average(weights, weights=self.probabilities)

    def summary(self) -> dict:
        """What the run record keeps: shares, caps, epoch size, draws per patient."""
        archive = self.patients != ""
        per_patient = {
            p: float(self.probabilities[self.patients == p].sum())
            for p in sorted(set(self.patients[archive].tolist()))
        }
        return {
            "archive_share": self.archive_share,
            "patient_cap": self.patient_cap,
            "epoch_size": self.epoch_size,
            "expected_archive_draws": round(float(self.probabilities[archive].sum()), 1),
            "expected_sartaj_draws": round(float(self.probabilities[~archive].sum()), 1),
            "max_draws_per_patient": round(max(per_patient.values(), default=0.0), 2),
            "patients": len(per_patient),
        }


@dataclass(frozen=True)
class Epochs:
    """What the training pipelines take from a plan (``None``: not used).

    ``keep``: acceptance probabilities (``None``: every slice once per epoch); ``weights``:
    per-example loss weights (``None``: the class weights of the train split apply)."""

    keep: np.ndarray | None = None
    weights: np.ndarray | None = None


def epochs(plan: SamplingPlan, balance: str = "class") -> Epochs:
    """The plan as the pipelines take it: nothing at all when every slice is drawn once and the
    classes are balanced over the epoch (the class weights then do exactly that)."""
    if not plan.samples and balance == "class":
        return Epochs()
    return Epochs(plan.probabilities if plan.samples else None, plan.example_weights(balance))


def _balanced(labels: np.ndarray, probabilities: np.ndarray) -> dict[int, float]:
    """``{class: n / (k * n_c)}`` over expected counts; 1.0 for a class not drawn."""
    expected = np.bincount(labels, weights=probabilities, minlength=NUM_CLASSES)
    present = expected > 0
    out = dict.fromkeys(range(NUM_CLASSES), 1.0)
    total, k = expected.sum(), int(present.sum())
    out.update({int(c): float(total / (k * expected[c])) for c in np.flatnonzero(present)})
    return out


def plan_sampling(
    labels: np.ndarray,
    patients: np.ndarray,
    *,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    patient_cap: int = DEFAULT_PATIENT_CAP,
) -> SamplingPlan:
    """The acceptance probabilities for ``archive_share`` and ``patient_cap`` (rules above).

    ``patients`` is ``""`` for slices without a patient (SARTAJ). With no archive slices, or
    ``archive_share`` 0, every SARTAJ slice has probability 1 and archive slices 0.
    """
    if not 0.0 <= archive_share < 1.0:
        raise ValueError(f"archive_share must be in [0, 1), got {archive_share}")
    if patient_cap < 1:
        raise ValueError(f"patient_cap must be >= 1, got {patient_cap}")
    patients = np.asarray(patients).astype(str)
    archive = patients != ""
    names, index, counts = np.unique(patients[archive], return_inverse=True, return_counts=True)
    capped = np.minimum(counts, patient_cap).astype(float)
    n_sartaj, n_capped = int((~archive).sum()), float(capped.sum())
    probabilities = np.zeros(len(patients))
    if n_capped == 0 or archive_share == 0.0:
        probabilities[~archive] = 1.0
    else:
        # The longest epoch with no probability above 1: E <= N_sartaj / (1 - s), E <= C / s.
        limits = [n_capped / archive_share]
        if n_sartaj:
            limits.append(n_sartaj / (1.0 - archive_share))
        epoch = min(limits)
        probabilities[~archive] = (1.0 - archive_share) * epoch / max(n_sartaj, 1)
        per_slice = (archive_share * epoch / n_capped) * capped / counts
        probabilities[archive] = per_slice[index]
    return SamplingPlan(
        probabilities=np.clip(probabilities, 0.0, 1.0),
        labels=np.asarray(labels, dtype=np.int64),
        patients=patients,
        archive_share=float(archive_share),
        patient_cap=int(patient_cap),
    )


def split_plan(
    config: str,
    data_dir: str | os.PathLike | None,
    *,
    archive_share: float = DEFAULT_ARCHIVE_SHARE,
    patient_cap: int = DEFAULT_PATIENT_CAP,
) -> SamplingPlan:
    """:func:`plan_sampling` over the train split of ``config`` (labels and patients only)."""
    from tumorlib.data.pipeline import load_split

    columns = load_split("train", config, data_dir).map(lambda e: (e["label"], e["patient"]))
    labels: list[np.ndarray] = []
    patients: list[str] = []
    for label, patient in columns.batch(4096).as_numpy_iterator():
        labels.append(label)
        patients.extend(p.decode() for p in patient)
    return plan_sampling(
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
        np.asarray(patients, dtype=str),
        archive_share=archive_share,
        patient_cap=patient_cap,
    )
