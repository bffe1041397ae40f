"""Every ``tensorflow_model_server`` flag is accepted; the config files parse as upstream's do;
the model config file is polled and ``HandleReloadConfigRequest`` applies a new model list."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.server import flags
from serving.server.config import ConfigError, load_monitoring_config, parse_batching_parameters
from serving.server.local import build_arg_parser, main
from tests.fixtures.serving import LocalServer, make_images

# Every flag of tensorflow_model_server (tensorflow_serving/model_servers/main.cc, 2.21) with a
# value of its type, spelt as a deployment passes it.
UPSTREAM_FLAGS = {
    "port": "8500", "grpc_socket_path": "/tmp/tfs.sock", "rest_api_port": "8501",
    "rest_api_num_threads": "4", "rest_api_timeout_in_ms": "30000",
    "rest_api_enable_cors_support": "true", "enable_batching": "true",
    "allow_version_labels_for_unavailable_models": "true", "batching_parameters_file": "b.txt",
    "enable_per_model_batching_parameters": "false", "model_config_file": "models.config",
    "model_config_file_poll_wait_seconds": "60", "model_name": "brain_mri",
    "model_base_path": "/models/brain_mri", "num_load_threads": "0", "num_unload_threads": "0",
    "max_num_load_retries": "5", "load_retry_interval_micros": "60000000",
    "file_system_poll_wait_seconds": "1", "flush_filesystem_caches": "true",
    "tensorflow_session_parallelism": "0", "tensorflow_session_config_file": "s.txt",
    "tensorflow_intra_op_parallelism": "0", "tensorflow_inter_op_parallelism": "0",
    "use_alts_credentials": "false", "ssl_config_file": "ssl.txt",
    "platform_config_file": "p.txt", "per_process_gpu_memory_fraction": "0.5",
    "saved_model_tags": "serve", "grpc_channel_arguments": "grpc.max_connection_age_ms=2000",
    "grpc_max_threads": "8", "enable_model_warmup": "true",
    "num_request_iterations_for_warmup": "1", "version": "false",
    "monitoring_config_file": "monitoring.config",
    "remove_unused_fields_from_bundle_metagraph": "true", "prefer_tflite_model": "false",
    "num_tflite_pools": "2", "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false", "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false", "enable_profiler": "true",
    "thread_pool_factory_config_file": "t.txt", "mixed_precision": "bfloat16",
    "skip_initialize_tpu": "false", "enable_grpc_healthcheck_service": "true",
    "enable_serialization_as_tensor_content": "false",
}  # fmt: skip


def test_every_tensorflow_model_server_flag_is_accepted():
    argv = [f"--{name}={value}" for name, value in UPSTREAM_FLAGS.items()]
    args = build_arg_parser().parse_args(argv)
    assert args.port == 8500 and args.enable_batching is True
    assert args.model_config_file_poll_wait_seconds == 60
    assert args.grpc_channel_arguments == "grpc.max_connection_age_ms=2000"
    assert args.per_process_gpu_memory_fraction == 0.5
    declared = {name for name, *_ in flags.IMPLEMENTED} | {name for name, _ in flags.NO_EFFECT}
    assert declared == set(UPSTREAM_FLAGS)


def test_booleans_are_spelt_as_tf_flags_spell_them():
    parse = build_arg_parser().parse_args
    assert parse(["--enable_batching"]).enable_batching is True
    assert parse(["--enable_batching=1"]).enable_batching is True
    assert parse(["--enable_model_warmup=false"]).enable_model_warmup is False
    assert parse([]).enable_model_warmup is True
    with pytest.raises(SystemExit):
        parse(["--enable_batching=maybe"])


def test_flags_without_effect_are_warned_once(caplog):
    args = build_arg_parser().parse_args(["--ssl_config_file=x", "--num_tflite_pools=3"])
    with caplog.at_level(logging.WARNING, logger="serving.server.local"):
        assert set(flags.warn_no_effect(args)) == {"ssl_config_file", "num_tflite_pools"}
        flags.warn_no_effect(args)
    warned = [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()]
    assert sorted(warned) == sorted(
        f"--{n} is accepted for tensorflow_model_server compatibility; it has no effect on the "
        "local server"
        for n in ("ssl_config_file", "num_tflite_pools")
    )


def test_upstream_start_up_refusals_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--batching_parameters_file=b.txt"])
    assert raised.value.code == 2
    assert "batching_parameters_file is set without setting" in capsys.readouterr().err
    args = build_arg_parser().parse_args(
        ["--tensorflow_session_parallelism=2", "--tensorflow_intra_op_parallelism=2",
         "--tensorflow_inter_op_parallelism=2"]
    )  # fmt: skip
    assert "You cannot configure all." in flags.check_flags(args)


def test_version_flag_prints_and_exits(capsys):
    assert main(["--version"]) == 0
    assert "TensorFlow Library: " in capsys.readouterr().out


def test_grpc_channel_arguments_are_typed_as_upstream_types_them():
    assert flags.grpc_channel_arguments("a=1, b=x,,c=") == [("a", 1), ("b", "x"), ("c", "")]


def test_batching_parameters_parse_every_upstream_field():
    options = parse_batching_parameters("""
        max_batch_size { value: 8 }  batch_timeout_micros { value: 500 }
        max_enqueued_batches { value: 4 }  num_batch_threads { value: 3 }
        thread_pool_name { value: "pool" }  allowed_batch_sizes: 4  allowed_batch_sizes: 8
        pad_variable_length_inputs: true  enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 8 }
    """)
    assert (options.max_batch_size, options.batch_timeout_micros) == (8, 500)
    assert (options.max_enqueued_batches, options.num_batch_threads) == (4, 3)
    assert options.thread_pool_name == "pool" and options.allowed_batch_sizes == (4, 8)
    with pytest.raises(ConfigError):
        parse_batching_parameters("max_batch_size { value: 8 } no_such_field: 1")


def test_monitoring_config(tmp_path):
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: true }")
    assert load_monitoring_config(config) == "/monitoring/prometheus/metrics"
    config.write_text('prometheus_config { enable: true path: "/metrics" }')
    assert load_monitoring_config(config) == "/metrics"
    config.write_text("prometheus_config { enable: false }")
    assert load_monitoring_config(config) is None
    config.write_text("prometheus { enable: true }")
    with pytest.raises(ConfigError):
        load_monitoring_config(config)


# -- the model list changes while serving -------------------------------------------------------


def _config(*models: tuple[str, str, dict[str, int]]) -> str:
    entries = []
    for name, base, labels in models:
        label_text = " ".join(
            f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items()
        )
        entries.append(f'config {{ name: "{name}" base_path: "{base}" model_platform: '
                       f'"tensorflow" {label_text} }}')  # fmt: skip
    return "model_config_list { " + " ".join(entries) + " }"


def _states(channel, name: str) -> dict[int, str]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    try:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=10
        )
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return {}
    state = get_model_status_pb2.ModelVersionStatus.State.Name
    return {s.version: state(s.state) for s in response.model_version_status}


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def _predict(channel, name: str, label: str = "") -> grpc.StatusCode:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if label:
        request.model_spec.version_label = label
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(make_images(1)))
    try:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
def test_model_config_file_is_polled(tmp_path, fixture_export):
    config = tmp_path / "models.config"
    config.write_text(_config(("a", fixture_export, {})))
    server = LocalServer(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1")
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            assert _states(channel, "a") == {1: "AVAILABLE"} and _states(channel, "b") == {}
            config.write_text(
                _config(("a", fixture_export, {}), ("b", fixture_export, {"stable": 1}))
            )
            _wait(lambda: _states(channel, "b") == {1: "AVAILABLE"})
            assert _predict(channel, "b", "stable") == grpc.StatusCode.OK
            config.write_text(_config(("b", fixture_export, {"stable": 1})))
            _wait(lambda: _states(channel, "a") == {1: "END"})
            assert _predict(channel, "a") == grpc.StatusCode.NOT_FOUND
            # a label on a version that is not AVAILABLE fails the reload; the old labels stay
            config.write_text(_config(("b", fixture_export, {"stable": 1, "next": 99})))
            time.sleep(3)
            assert _predict(channel, "b", "stable") == grpc.StatusCode.OK
            assert _predict(channel, "b", "next") == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop()


@pytest.mark.slow
def test_handle_reload_config_request(fixture_export):
    server = LocalServer(f"--model_base_path={fixture_export}", "--model_name=a")
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = model_management_pb2.ReloadConfigRequest()
            for name in ("a", "b"):
                entry = request.config.model_config_list.config.add()
                entry.name, entry.base_path, entry.model_platform = (
                    name, str(fixture_export), "tensorflow",
                )  # fmt: skip
            response = stub.HandleReloadConfigRequest(request, timeout=120)
            assert response.status.error_code == 0
            assert _states(channel, "b") == {1: "AVAILABLE"}
            assert _predict(channel, "b") == grpc.StatusCode.OK
            with pytest.raises(grpc.RpcError) as raised:
                stub.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(), timeout=30
                )
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop()
