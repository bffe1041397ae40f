"""Which model versions the local server has loaded, and keeping that in step with the disk.

Mirrors TF Serving's file-system source: every ``file_system_poll_wait_seconds`` the base path
of each model is listed, the version policy picks the versions to serve (the newest one by
default), new ones are loaded — and warmed up with their ``assets.extra`` records — *before* old
ones are unloaded (so requests never see a gap), and unloaded versions are reported with state
``END``. :meth:`ModelManager.reload_config` applies a new model list (``--model_config_file``
polling, gRPC ``HandleReloadConfigRequest``): models added are loaded, models removed unloaded,
and version labels re-checked as ``ServerCore::UpdateModelVersionLabelMap`` checks them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.common.tf_errors import summarize_tf_error
from serving.common.versions import list_versions
from serving.server import metrics
from serving.server.batching import Batcher
from serving.server.config import BatchingOptions, ServedModelConfig
from serving.server.status import FailedPrecondition, InvalidArgument, NotFound
from serving.server.warmup import run_warmup
from tumorlib.contracts.serving_contract import SERVING_SIGNATURE

log = logging.getLogger("serving.server.local")

INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass
class LoadedVersion:
    """One loaded SavedModel version: its signatures, their SignatureDefs, its batcher."""

    name: str
    version: int
    path: Path
    loaded: Any
    signature_defs: dict[str, Any]  # name -> tensorflow.core.protobuf.meta_graph_pb2.SignatureDef
    batcher: Batcher | None = None

    def run(self, signature_name: str, inputs: dict[str, list[bytes]]) -> dict[str, np.ndarray]:
        """Call a signature with string inputs; bad input -> :class:`InvalidArgument`."""
        import tensorflow as tf

        function = self.loaded.signatures[signature_name]
        try:
            outputs = function(**{k: tf.constant(v, dtype=tf.string) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
            message = getattr(err, "message", None) or str(err)
            raise InvalidArgument(summarize_tf_error(message)) from None
        return {k: v.numpy() for k, v in outputs.items()}


def read_signature_defs(path: Path) -> dict[str, Any]:
    """The SignatureDef protos of a SavedModel, as TF Serving's metadata API reports them."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    return dict(saved_model.meta_graphs[0].signature_def)


@dataclass
class ServedModel:
    """A model name, its version policy and the versions currently loaded."""

    config: ServedModelConfig
    batching: BatchingOptions | None
    warmup_iterations: int = 1  # 0: --enable_model_warmup=false
    tags: list[str] | None = None  # --saved_model_tags (None: "serve")
    # The manager's request path (batcher or thread pool): warm-up replays through it, so the
    # threads that will answer requests have run the version too, as in TF Serving.
    runner: Callable[[LoadedVersion, str, dict[str, list[bytes]]], Future] | None = None
    batch_workers: ThreadPoolExecutor | None = None  # shared by every version's batcher
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    labels: dict[str, int] = field(default_factory=dict)  # applied by ModelManager.apply_labels
    retired: bool = False  # removed from the model config: everything unloaded
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Load versions the policy now wants, then unload those it no longer wants.

        New versions are loaded first (slow, outside the lock); adding them and retiring the
        unwanted ones then happens under one lock, so a status request never sees the old and
        the new version both AVAILABLE and a predict request always finds a version.
        """
        wanted = (
            set() if self.retired else set(self.config.select(list_versions(self.config.base_path)))
        )
        loaded: dict[int, LoadedVersion] = {}
        for version in sorted(wanted - set(self.versions)):
            try:
                loaded[version] = self._load(version)
            except Exception as err:  # noqa: BLE001 - a broken export must not stop the server
                log.error("failed to load %s version %d: %s", self.config.name, version, err)
        retired: list[LoadedVersion] = []
        with self.lock:
            self.versions.update(loaded)
            self.ended.difference_update(loaded)
            if wanted or self.retired:  # not everything because the folder was briefly empty
                for version in sorted(set(self.versions) - wanted):
                    retired.append(self.versions.pop(version))
                    self.ended.add(version)
        for version in sorted(loaded):
            log.info("loaded %s version %d", self.config.name, version)
            metrics.VERSION_AVAILABLE.labels(self.config.name, str(version)).set(1)
        for old in retired:
            if old.batcher is not None:
                old.batcher.close()
            metrics.VERSION_AVAILABLE.labels(self.config.name, str(old.version)).set(0)
            log.info("unloaded %s version %d", self.config.name, old.version)

    def _load(self, version: int) -> LoadedVersion:
        """Load and warm up one version; the attempt and its time are recorded under
        TensorFlow's SavedModel loader metrics."""
        import tensorflow as tf

        path = self.config.base_path / str(version)
        start = time.monotonic()
        try:
            loaded = LoadedVersion(
                name=self.config.name,
                version=version,
                path=path,
                loaded=tf.saved_model.load(str(path), tags=self.tags),
                signature_defs=read_signature_defs(path),
            )
        except Exception:
            metrics.LOAD_ATTEMPT_COUNT.labels(str(path), "fail").inc()
            raise
        metrics.LOAD_ATTEMPT_COUNT.labels(str(path), "success").inc()
        metrics.LOAD_LATENCY.labels(str(path)).inc((time.monotonic() - start) * 1e6)
        if self.batching is not None and SERVING_SIGNATURE in loaded.signature_defs:
            input_key = next(iter(loaded.signature_defs[SERVING_SIGNATURE].inputs))
            loaded.batcher = Batcher(
                lambda images: loaded.run(SERVING_SIGNATURE, {input_key: images}),
                self.batching,
                name=f"{self.config.name}-v{version}",
                workers=self.batch_workers,
            )
        if self.warmup_iterations > 0:
            try:
                run_warmup(
                    path, loaded.signature_defs, self._replay(loaded), self.warmup_iterations
                )
            except Exception:
                if loaded.batcher is not None:
                    loaded.batcher.close()
                raise
        return loaded

    def _replay(self, loaded: LoadedVersion) -> Callable[[str, dict[str, list[bytes]]], Any]:
        """Run a warm-up request the way a client's request would run."""
        if self.runner is None:
            return loaded.run
        runner = self.runner
        return lambda name, inputs: runner(loaded, name, inputs).result()

    def resolve(self, version: int | None, label: str | None) -> LoadedVersion:
        """The version a request addresses, with TF Serving's NOT_FOUND messages."""
        name = self.config.name
        if self.retired:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if label is not None:
            if label not in self.labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        with self.lock:
            if version is None:
                if not self.versions:
                    raise NotFound(f"Servable not found for request: Latest({name})")
                return self.versions[max(self.versions)]
            if version not in self.versions:
                raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            return self.versions[version]

    def status(self, version: int | None) -> list[tuple[int, str]]:
        """(version, state) pairs for the model status API."""
        with self.lock:
            states = {v: "AVAILABLE" for v in self.versions}
            states.update({v: "END" for v in self.ended})
        if version is not None:
            if version not in states:
                raise NotFound(f"Could not find version {version} of model {self.config.name}")
            return [(version, states[version])]
        if not states:
            raise NotFound(f"Could not find any versions of model {self.config.name}")
        return sorted(states.items(), reverse=True)


class ModelManager:
    """All served models, plus the pollers that keep them in step with their base paths and,
    with ``config_file``, with the model config file."""

    def __init__(
        self,
        configs: list[ServedModelConfig],
        batching: BatchingOptions | None,
        poll_seconds: float = 1.0,
        num_threads: int = 4,
        *,
        warmup_iterations: int = 1,
        allow_unavailable_labels: bool = False,
        config_file: Callable[[], list[ServedModelConfig]] | None = None,
        config_poll_seconds: float = 0.0,
        tags: list[str] | None = None,
    ) -> None:
        self.batching = batching
        self.poll_seconds = poll_seconds
        self.warmup_iterations = warmup_iterations
        self.allow_unavailable_labels = allow_unavailable_labels
        self.tags = tags
        self._executor = ThreadPoolExecutor(num_threads, thread_name_prefix="predict")
        self._batch_workers = (
            ThreadPoolExecutor(batching.num_batch_threads, thread_name_prefix="batch")
            if batching is not None else None
        )  # fmt: skip
        self.models = {c.name: self._served(c) for c in configs}
        self._config_file = config_file
        self._config_poll_seconds = config_poll_seconds
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _served(self, config: ServedModelConfig) -> ServedModel:
        return ServedModel(
            config, self.batching, warmup_iterations=self.warmup_iterations, tags=self.tags,
            runner=self.predict, batch_workers=self._batch_workers,
        )  # fmt: skip

    def refresh(self) -> None:
        for model in list(self.models.values()):
            model.refresh()

    def start(self) -> None:
        """Load what is on disk now (and check the version labels), then keep polling."""
        self.refresh()
        self.apply_labels()
        loops = [(self.poll_seconds, self.refresh, "version-poller")]
        if self._config_file is not None:
            loops.append((self._config_poll_seconds, self._reload_config_file, "config-poller"))
        for seconds, step, name in loops:
            if seconds > 0:
                thread = threading.Thread(
                    target=self._poll, args=(seconds, step), name=name, daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for model in self.models.values():
            for loaded in model.versions.values():
                if loaded.batcher is not None:
                    loaded.batcher.close()
        self._executor.shutdown(wait=False)
        if self._batch_workers is not None:
            self._batch_workers.shutdown(wait=False)

    def _poll(self, seconds: float, step: Callable[[], None]) -> None:
        while not self._stop.wait(seconds):
            try:
                step()
            except Exception as err:  # noqa: BLE001 - keep polling whatever one pass hit
                log.error("poll failed: %s", err)

    def _reload_config_file(self) -> None:
        assert self._config_file is not None
        self.reload_config(self._config_file())

    def reload_config(self, configs: list[ServedModelConfig]) -> None:
        """Serve ``configs`` from now on: new models loaded, removed ones unloaded (END), the
        rest re-read with their new policy; then the labels (``FailedPrecondition`` if one
        names a version that is not AVAILABLE, the previous labels kept)."""
        with self._reload_lock:
            wanted = {c.name: c for c in configs}
            for name, model in self.models.items():
                model.retired = name not in wanted
                if name in wanted:
                    model.config = wanted[name]
            for name, config in wanted.items():
                if name not in self.models:
                    self.models[name] = self._served(config)
            self.refresh()
            self.apply_labels()

    def apply_labels(self) -> None:
        """Each model's ``version_labels``, checked as TF Serving checks them (all or none)."""
        new: dict[str, dict[str, int]] = {}
        for name, model in self.models.items():
            for label, version in model.config.version_labels.items():
                changed = model.labels.get(label, version) != version
                allowed = self.allow_unavailable_labels and not changed
                if not allowed and version not in model.versions:
                    raise FailedPrecondition(
                        f"Request to assign label to version {version} of model {name}, which "
                        "is not currently available for inference"
                    )
                new.setdefault(name, {})[label] = version
        for name, model in self.models.items():
            model.labels = new.get(name, {})

    def get(self, name: str) -> ServedModel:
        if name not in self.models or self.models[name].retired:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return self.models[name]

    def predict(
        self, loaded: LoadedVersion, signature: str, inputs: dict[str, list[bytes]]
    ) -> Future:
        """Run a signature: through the batcher for ``serving_default``, directly otherwise."""
        if signature == SERVING_SIGNATURE and loaded.batcher is not None:
            (images,) = inputs.values()
            if not images:
                raise InvalidArgument("Expecting a non-empty batch of inputs")
            return loaded.batcher.submit(images)
        return self._executor.submit(loaded.run, signature, inputs)
