"""Live performance and drift from the audit, checked against scikit-learn on a hand-made set,
and the ``tumorlib audit`` command that prints them."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from serving.audit import records
from serving.audit.drift import drift_report, flagged
from serving.audit.performance import performance_by_version
from serving.audit.queries import predictions_frame
from serving.audit.store import AuditStore
from serving.audit.writer import AuditWriter
from serving.clients.prediction import Prediction
from tests.fixtures.audit import PostgresCluster  # noqa: F401 (documents the PostgreSQL twin)
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib_cli.__main__ import main as tumorlib

K = len(CLASS_NAMES)


def _prediction(cls: int, confidence: float, abstain=None, in_dist=None, gate=None) -> Prediction:
    rest = (1 - confidence) / (K - 1)
    probs = {n: (confidence if i == cls else rest) for i, n in enumerate(CLASS_NAMES)}
    return Prediction(probs, cls, CLASS_NAMES[cls], confidence, abstain, in_dist, gate)


def hand_made_cases(seed: int = 3) -> list[dict]:
    """120 predictions: model class, radiologist's class (None: not assessable / no feedback)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(120):
        truth = int(rng.integers(0, K))
        model = truth if rng.random() < 0.65 else int(rng.integers(0, K))
        cases.append({
            "model": model, "truth": truth, "confidence": float(rng.uniform(0.3, 1.0)),
            "abstain": bool(rng.random() < 0.15), "in_dist": i % 40 != 0,
            "feedback": "none" if i % 11 == 0 else ("not_assessable" if i % 17 == 0 else "class"),
        })  # fmt: skip
    return cases


def write_cases(url: str, tmp_path, cases: list[dict], version: int = 5, test_acc=0.95) -> None:
    store = AuditStore(url)
    model = records.ModelInfo("brain_mri", version, {"test_accuracy": test_acc})
    rows = [("model", records.model_row(model))]
    for case in cases:
        p = _prediction(case["model"], case["confidence"], case["abstain"], case["in_dist"], 0.5)
        row = records.prediction_row(p, b"x", model=model, backend="in-process", source="test")
        rows.append(("prediction", row))
        if case["feedback"] == "class":
            verdict = "agree" if case["truth"] == case["model"] else "disagree"
            corrected = None if verdict == "agree" else CLASS_NAMES[case["truth"]]
            rows.append(("feedback", records.feedback_row(row["id"], verdict,
                                                          corrected_class=corrected)))  # fmt: skip
        elif case["feedback"] == "not_assessable":
            rows.append(("feedback", records.feedback_row(row["id"], "not_assessable")))
    store.write(rows)
    store.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return request.getfixturevalue("postgres_cluster").new_database()


from tests.fixtures.audit import postgres_cluster  # noqa: E402,F401 (fixture)


def test_figures_match_scikit_learn_on_a_hand_made_set(url, tmp_path):
    cases = hand_made_cases()
    write_cases(url, tmp_path, cases)
    figures = performance_by_version(AuditStore(url))[("brain_mri", 5)]
    scored = [c for c in cases if c["feedback"] == "class" and c["in_dist"]]
    truth = [c["truth"] for c in scored]
    model = [c["model"] for c in scored]
    assert figures["accuracy"]["value"] == pytest.approx(accuracy_score(truth, model))
    assert figures["accuracy"]["n"] == len(scored)
    acc = figures["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"] and acc["high"] - acc["low"] > 0.05
    recalls = recall_score(truth, model, labels=range(K), average=None, zero_division=0)
    for c, name in enumerate(CLASS_NAMES):
        assert figures["recall"][name]["value"] == pytest.approx(recalls[c])
        assert figures["recall"][name]["n"] == truth.count(c)
    assert figures["confusion_matrix"] == confusion_matrix(truth, model, labels=range(K)).tolist()
    accepted = [c for c in scored if not c["abstain"]]
    assert figures["accepted_accuracy"]["value"] == pytest.approx(
        np.mean([c["truth"] == c["model"] for c in accepted])
    )
    in_dist = [c for c in cases if c["in_dist"]]
    assert figures["refer_rate"]["value"] == pytest.approx(np.mean([c["abstain"] for c in in_dist]))
    assert figures["refer_rate"]["n"] == len(in_dist)
    counts = figures["counts"]
    assert counts["predictions"] == 120
    assert counts["not_assessable"] == sum(c["feedback"] == "not_assessable" for c in cases)
    bins = figures["reliability"]
    assert sum(b["count"] for b in bins) == len(scored)
    # Agreement ~75% against a card claiming 95%: below beyond the interval.
    assert figures["flag"] and "95.0%" in figures["flag"]


def test_no_flag_when_the_card_is_within_the_interval(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    write_cases(url, tmp_path, hand_made_cases(), test_acc=0.78)
    assert performance_by_version(AuditStore(url))[("brain_mri", 5)]["flag"] is None


def test_drift_is_flagged_on_a_shifted_stream_and_not_on_a_steady_one(tmp_path):
    rng = np.random.default_rng(0)
    reference = {"validation_distribution": {
        "confidence": rng.beta(8, 2, 400).round(4).tolist(),
        "gate_score": rng.gamma(4, 0.1, 400).round(4).tolist(),
    }}  # fmt: skip
    start = dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC)  # a Monday
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    store = AuditStore(url)
    model = records.ModelInfo("brain_mri", 1, reference)
    rows = [("model", records.model_row(model))]
    for week, (a, b, shape) in enumerate([(8, 2, 4), (3, 3, 9)]):  # steady, then shifted
        for i in range(150):
            p = _prediction(0, float(rng.beta(a, b)), gate=float(rng.gamma(shape, 0.1)))
            row = records.prediction_row(p, b"x", model=model, backend="b", source="test")
            row["created_at"] = start + dt.timedelta(weeks=week, hours=i % 100)
            rows.append(("prediction", row))
    store.write(rows)
    report = drift_report(predictions_frame(store), reference, period="week")
    assert [r["period"] for r in report["periods"]] == ["2026-05-04", "2026-05-11"]
    assert flagged(report) == ["2026-05-11 confidence", "2026-05-11 gate_score"]
    first = report["periods"][0]["confidence"]
    assert first["live"]["n"] == 150 and first["p_value"] > 0.01
    no_reference = drift_report(predictions_frame(store), {"validation_distribution": None})
    assert "no validation distribution" in no_reference["message"]


def test_tumorlib_audit_command(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli' / 'audit.sqlite'}"
    assert tumorlib(["audit", "--url", url, "migrate"]) == 0
    assert "revision 0001" in capsys.readouterr().out
    write_cases(url, tmp_path, hand_made_cases())
    out_dir = tmp_path / "perf"
    assert tumorlib(["audit", "--url", url, "performance", "--output-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "brain_mri version 5: 120 predictions" in printed and "FLAG:" in printed
    assert "agreement (accuracy):" in printed and "95% CI" in printed and "n=" in printed
    assert (out_dir / "reliability-brain_mri-v5.png").read_bytes()[:4] == b"\x89PNG"
    assert "brain_mri/5" in json.loads((out_dir / "performance.json").read_text())
    assert tumorlib(["audit", "--url", url, "drift", "--period", "day"]) == 0
    assert "no validation distribution" in capsys.readouterr().out
    assert tumorlib(["audit", "--url", url, "export", "--output", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "predictions.csv").read_text().count("\n") == 121
    future = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    assert tumorlib(["audit", "--url", url, "purge", "--before", future]) == 0
    assert '"predictions": 120' in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad_usage:
        tumorlib(["audit", "--url", url, "purge", "--before", "not-a-date"])
    assert bad_usage.value.code == 2
    down = ["audit", "--url", url, "migrate", "--down", "--revision", "base"]
    assert tumorlib(down) == 1  # the model row is still a record: not dropped without consent
    assert "--yes-delete-records" in capsys.readouterr().err
    assert tumorlib([*down, "--yes-delete-records"]) == 0


def test_an_unreachable_database_is_one_line_and_exit_1(capsys):
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    assert tumorlib(["audit", "--url", url, "performance"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: audit database:") and "Traceback" not in err


def test_writer_batches_are_idempotent(tmp_path):
    """A batch retried after a partial failure inserts each row once — through the writer.

    The first write commits and then fails (the connection dropped on the way back), so the
    writer retries the very same batch; a row submitted twice (a replayed spool) arrives again.
    Each row must be in the database once and the writer must end healthy, not retry forever."""
    from serving.audit.spool import Spool

    store = AuditStore(f"sqlite:///{tmp_path / 'a.sqlite'}")
    model = records.ModelInfo("brain_mri", 1, {})
    row = records.prediction_row(_prediction(0, 0.9), b"x", model=model, backend="b", source="test")
    store.write([("prediction", row)])
    store.write([("prediction", row), ("model", records.model_row(model))])
    assert len(store.rows("prediction")) == 1

    class CommitsThenFails:
        """The real store, whose first write raises after it has committed."""

        def __init__(self) -> None:
            self.calls = 0

        def write(self, items):
            self.calls += 1
            written = store.write(items)
            if self.calls == 1:
                raise ConnectionError("server closed the connection after COMMIT")
            return written

    flaky = CommitsThenFails()
    writer = AuditWriter(lambda: flaky, Spool(tmp_path / "spool.jsonl"), retry_initial_s=0.05)
    second = records.prediction_row(_prediction(1, 0.8), b"y", model=model, backend="b",
                                    source="test")  # fmt: skip
    feedback = records.feedback_row(second["id"], "agree")
    for kind, item in [("prediction", second), ("feedback", feedback), ("prediction", second)]:
        writer.submit(kind, item)
    assert writer.flush(10.0)
    status = writer.close(5.0)
    assert flaky.calls >= 2  # the batch really was retried
    assert status.last_error is None and status.spooled == 0 and status.pending == 0
    assert sorted(r["id"] for r in store.rows("prediction")) == sorted([row["id"], second["id"]])
    assert [f["prediction_id"] for f in store.rows("feedback")] == [second["id"]]
