"""The export's warm-up file is what TF Serving reads: a TFRecord of ``PredictionLog``s whose
requests the SavedModel answers (checked with TensorFlow's reader and the exported signatures,
as ``saved_model_warmup_util.cc`` replays them)."""

from __future__ import annotations

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.common.versions import find_latest_version
from serving.common.warmup_records import MAX_WARMUP_RECORDS, WARMUP_DIR, WARMUP_FILE


def _records(version_dir) -> list[prediction_log_pb2.PredictionLog]:
    path = version_dir / WARMUP_DIR / WARMUP_FILE
    assert path.is_file(), "the export wrote no assets.extra/tf_serving_warmup_requests"
    logs = []
    for record in tf.data.TFRecordDataset(str(path)):  # checks every record's CRCs
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def test_export_writes_predict_logs_the_saved_model_answers(fixture_export):
    version_dir = fixture_export / str(find_latest_version(fixture_export))
    logs = _records(version_dir)
    assert 0 < len(logs) <= MAX_WARMUP_RECORDS
    loaded = tf.saved_model.load(str(version_dir))
    asked = set()
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == "brain_mri"
        name = request.model_spec.signature_name or "serving_default"
        signature = loaded.signatures[name]
        expected = set(signature.structured_input_signature[1])
        assert set(request.inputs) == expected  # TF Serving's input-size and alias checks
        inputs = {}
        for key, tensor in request.inputs.items():
            assert tensor.dtype == tf.string.as_datatype_enum
            assert [d.size for d in tensor.tensor_shape.dim] == [len(tensor.string_val)]
            inputs[key] = tf.constant(tf.make_ndarray(tensor))
        outputs = signature(**inputs)  # what RunPredict does with the record
        assert outputs
        asked.add((name, len(tensor.string_val)))
    # the serving signature at batch 1 and above it, Grad-CAM and the metadata signature
    assert {("serving_default", 1), ("explain", 1), ("metadata", 1)} <= asked
    assert any(name == "serving_default" and n > 1 for name, n in asked)


def test_export_without_warmup_writes_no_file(tmp_path):
    from serving.export.exporter import export_run
    from tests.fixtures.serving import make_fixture_run

    target = export_run(make_fixture_run(tmp_path / "runs" / "w"), tmp_path / "m", warmup=False,
                        verify=False)  # fmt: skip
    assert not (target / WARMUP_DIR).exists()
