"""The input gate's statistics: per-layer Mahalanobis distances, fitting and evaluation.

Why: a softmax classifier always answers one of its four classes, with high confidence even on a
holiday photo or a page of text. The gate measures how far an image lies from the training
distribution in the backbone's feature space: for each of a few backbone layers, the Mahalanobis
distance of the layer's globally pooled activations to the training mean under a Ledoit–Wolf
shrinkage covariance (Lee et al., 2018, use several layers the same way; Ledoit & Wolf, 2004:
~2,000 samples cannot estimate a 1280×1280 covariance without shrinkage). An image is accepted only
if every layer accepts it.

Each layer's threshold is the ``1 - false_rejection / L`` quantile of the *validation* split's
distances (L layers: a Bonferroni split, so the combined validation false-rejection stays within
the target); the test split then measures the real false-rejection rate, and generated negatives
(:mod:`tumorlib.safety.gate_negatives`) the rejection rate.

Plain NumPy: the fitted statistics are arrays (``.npz``), which :mod:`tumorlib.safety.gate_graph`
embeds in the exported graph as constants. Features come from :mod:`tumorlib.safety.gate_features`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_FALSE_REJECTION = 0.005

Features = dict[str, np.ndarray]  # layer name -> pooled activations [N, D_layer]


class GateError(ValueError):
    """The gate cannot be fitted or loaded (too few samples, wrong shapes, missing file)."""


@dataclass
class LayerGate:
    """Mahalanobis statistics of one layer's pooled activations."""

    layer: str
    mean: np.ndarray  # [D]
    precision: np.ndarray  # [D, D], inverse of the shrinkage covariance
    threshold: float = float("inf")
    shrinkage: float = float("nan")

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``[N]`` of pooled activations ``[N, D]``."""
        features = np.asarray(features, dtype=np.float64)
        dim = self.mean.shape[0]
        if features.ndim != 2 or features.shape[1] != dim:
            raise GateError(
                f"layer {self.layer}: expected features [N, {dim}], got {list(features.shape)}"
            )
        centred = features - self.mean
        d2 = np.einsum("nd,de,ne->n", centred, self.precision, centred)
        return np.sqrt(np.maximum(d2, 0.0))


@dataclass
class LinearCheck:
    """A linear "brain MRI or not" discriminant on the concatenated pooled features.

    ``logit = features @ weights + bias`` (standardisation folded in); accepted when
    ``logit >= threshold``. Its score ``exp(threshold - logit)`` is, like a layer's
    distance/threshold ratio, accepted when <= 1.
    """

    layers: tuple[str, ...]
    weights: np.ndarray  # [sum of the layers' D]
    bias: float
    threshold: float

    def logit(self, features: Features) -> np.ndarray:
        x = np.concatenate([np.asarray(features[name], np.float64) for name in self.layers], 1)
        if x.shape[1] != self.weights.shape[0]:
            raise GateError(
                f"linear check: expected {self.weights.shape[0]} features, got {x.shape}"
            )
        return x @ self.weights + self.bias

    def score(self, features: Features) -> np.ndarray:
        return np.exp(np.minimum(self.threshold - self.logit(features), MAX_LOG_SCORE))


MAX_LOG_SCORE = 50.0  # caps exp() in the score: far beyond any threshold, never inf


@dataclass
class InputGate:
    """Accept an image when every layer's distance is within that layer's threshold (and, with
    a :class:`LinearCheck`, when the discriminant accepts it too)."""

    layers: list[LayerGate]
    false_rejection_target: float = DEFAULT_FALSE_REJECTION
    meta: dict = field(default_factory=dict)
    linear: LinearCheck | None = None

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(g.layer for g in self.layers)

    def _check(self, features: Features) -> None:
        missing = [name for name in self.layer_names if name not in features]
        if missing:
            raise GateError(f"features for layers {missing} missing (have {sorted(features)})")

    def distances(self, features: Features) -> dict[str, np.ndarray]:
        self._check(features)
        return {g.layer: g.distance(features[g.layer]) for g in self.layers}

    def score(self, features: Features) -> np.ndarray:
        """``[N]``: the largest distance/threshold ratio over layers (and the linear check's
        score); accepted when <= 1."""
        self._check(features)
        ratios = [g.distance(features[g.layer]) / g.threshold for g in self.layers]
        if self.linear is not None:
            ratios.append(self.linear.score(features))
        return np.max(ratios, axis=0)

    def accept(self, features: Features) -> np.ndarray:
        """Boolean ``[N]``: True for inputs that look like the training data."""
        return self.score(features) <= 1.0

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``: every layer's arrays, float32) for export and reloading."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "layers": np.array(self.layer_names),
            "false_rejection_target": np.float64(self.false_rejection_target),
        }
        for g in self.layers:
            arrays[f"{g.layer}.mean"] = g.mean.astype(np.float32)
            arrays[f"{g.layer}.precision"] = g.precision.astype(np.float32)
            arrays[f"{g.layer}.threshold"] = np.float64(g.threshold)
            arrays[f"{g.layer}.shrinkage"] = np.float64(g.shrinkage)
        if self.linear is not None:
            arrays["linear.layers"] = np.array(self.linear.layers)
            arrays["linear.weights"] = self.linear.weights.astype(np.float32)
            arrays["linear.bias"] = np.float64(self.linear.bias)
            arrays["linear.threshold"] = np.float64(self.linear.threshold)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> InputGate:
        path = Path(path)
        if not path.is_file():
            raise GateError(
                f"input gate file {path} does not exist; run `python -m tumorlib.input_gate RUN`"
            )
        with np.load(path) as z:
            layers = [
                LayerGate(
                    layer=str(name),
                    mean=z[f"{name}.mean"].astype(np.float64),
                    precision=z[f"{name}.precision"].astype(np.float64),
                    threshold=float(z[f"{name}.threshold"]),
                    shrinkage=float(z[f"{name}.shrinkage"]),
                )
                for name in z["layers"]
            ]
            linear = None
            if "linear.weights" in z:
                linear = LinearCheck(
                    tuple(str(n) for n in z["linear.layers"]),
                    z["linear.weights"].astype(np.float64),
                    float(z["linear.bias"]),
                    float(z["linear.threshold"]),
                )
            return cls(layers, float(z["false_rejection_target"]), linear=linear)


def fit_gate(
    train_features: Features,
    validation_features: Features,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
    *,
    far_factor: float = 1.0,
) -> InputGate:
    """Fit each layer's mean and shrinkage covariance on train; thresholds on validation.

    Fitting the statistics and the thresholds on different splits matters: training features
    are closer to their own mean than new in-distribution images, so thresholds set on them
    would reject too many genuine slices. ``far_factor`` > 1 widens every threshold by that
    factor: the distances then only catch what is far out, and a :class:`LinearCheck` does the
    near-distribution work.
    """
    from sklearn.covariance import LedoitWolf

    if not 0.0 <= false_rejection < 1.0:
        raise GateError(f"false_rejection must be in [0, 1), got {false_rejection}")
    if not train_features:
        raise GateError("no layers to fit the gate on")
    per_layer = false_rejection / len(train_features)
    layers = []
    for name, train in train_features.items():
        train = np.asarray(train, dtype=np.float64)
        if name not in validation_features:
            raise GateError(f"validation features lack layer {name}")
        val = np.asarray(validation_features[name], dtype=np.float64)
        if train.ndim != 2 or len(train) < 2:
            raise GateError(
                f"layer {name}: need at least 2 training rows [N, D], got {train.shape}"
            )
        if val.ndim != 2 or val.shape[1] != train.shape[1]:
            raise GateError(
                f"layer {name}: validation features {val.shape} do not match training {train.shape}"
            )
        lw = LedoitWolf().fit(train)
        gate = LayerGate(name, lw.location_, lw.precision_, shrinkage=float(lw.shrinkage_))
        quantile = float(np.quantile(gate.distance(val), 1.0 - per_layer, method="higher"))
        gate.threshold = far_factor * quantile
        layers.append(gate)
    return InputGate(layers, false_rejection)


def fit_linear_check(
    positives: Features,
    negatives: Features,
    validation_positives: Features,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
    *,
    regularisation: float = 0.01,
) -> LinearCheck:
    """Logistic regression, brain MRI (positives) vs anything else (negatives), on standardised
    concatenated features; its threshold is the ``false_rejection`` quantile of the validation
    positives' logits, so the validation false rejection is the target, whatever the negatives.

    Why a discriminant as well as distances: one Gaussian per layer cannot be wide enough for
    every MRI sequence (FLAIR, T2, T1 from other scanners) yet tight enough against photos; a
    linear boundary between brain MRI and non-MRI images can (classes are balanced by weight).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    layers = tuple(positives)
    join = lambda f: np.concatenate([np.asarray(f[n], np.float64) for n in layers], 1)  # noqa: E731
    x_pos, x_neg = join(positives), join(negatives)
    if len(x_neg) < 2 or len(x_pos) < 2:
        raise GateError("the linear check needs at least 2 positives and 2 negatives")
    x = np.concatenate([x_pos, x_neg])
    y = np.concatenate([np.ones(len(x_pos)), np.zeros(len(x_neg))])
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=regularisation, max_iter=5000, class_weight="balanced")
    model.fit(scaler.transform(x), y)
    weights = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - np.sum(model.coef_[0] * scaler.mean_ / scaler.scale_))
    check = LinearCheck(layers, weights, bias, threshold=0.0)
    logits = check.logit(validation_positives)
    check.threshold = float(np.quantile(logits, false_rejection, method="lower"))
    return check


def evaluate_gate(gate: InputGate, test_features: Features, negatives: dict[str, Features]) -> dict:
    """False rejection on in-distribution test images; rejection rate on negatives, per kind."""
    test_rejected = ~gate.accept(test_features)
    per_kind = {kind: ~gate.accept(feats) for kind, feats in negatives.items()}
    all_neg = np.concatenate(list(per_kind.values())) if per_kind else np.zeros(0, bool)
    return {
        "layers": [
            {
                "layer": g.layer,
                "threshold": g.threshold,
                "shrinkage": g.shrinkage,
                "feature_dim": int(g.mean.shape[0]),
            }
            for g in gate.layers
        ],
        "false_rejection_target_on_validation": gate.false_rejection_target,
        "test_false_rejection_rate": float(np.mean(test_rejected)),
        "test_rejected": int(test_rejected.sum()),
        "test_total": len(test_rejected),
        "negative_rejection_rate": float(np.mean(all_neg)) if len(all_neg) else float("nan"),
        "negatives_total": len(all_neg),
        "negative_rejection_by_kind": {
            k: {"rate": float(np.mean(v)), "n": len(v)} for k, v in sorted(per_kind.items())
        },
    }
