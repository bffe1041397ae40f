"""Which model versions the local server has loaded, and keeping that in step with the disk.

Mirrors TF Serving's file-system source: every ``file_system_poll_wait_seconds`` the base path
of each model is listed, the version policy picks the versions to serve (the newest one by
default), new ones are loaded *before* old ones are unloaded (so requests never see a gap), and
unloaded versions are reported with state ``END``.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.common.tf_errors import summarize_tf_error
from serving.common.versions import list_versions
from serving.server.batching import Batcher
from serving.server.config import BatchingOptions, ServedModelConfig
from serving.server.status import InvalidArgument, NotFound
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
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Load versions the policy now wants, then unload those it no longer wants.

        New versions are loaded first (slow, outside the lock); adding them and retiring the
        unwanted ones then happens under one lock, so a status request never sees the old and
        the new version both AVAILABLE and a predict request always finds a version.
        """
        wanted = set(self.config.select(list_versions(self.config.base_path)))
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
            if wanted:  # never unload everything because the folder was briefly empty
                for version in sorted(set(self.versions) - wanted):
                    retired.append(self.versions.pop(version))
                    self.ended.add(version)
        for version in sorted(loaded):
            log.info("loaded %s version %d", self.config.name, version)
        for old in retired:
            if old.batcher is not None:
                old.batcher.close()
            log.info("unloaded %s version %d", self.config.name, old.version)

    def _load(self, version: int) -> LoadedVersion:
        import tensorflow as tf

        path = self.config.base_path / str(version)
        loaded = LoadedVersion(
            name=self.config.name,
            version=version,
            path=path,
            loaded=tf.saved_model.load(str(path)),
            signature_defs=read_signature_defs(path),
        )
        if self.batching is not None and SERVING_SIGNATURE in loaded.signature_defs:
            input_key = next(iter(loaded.signature_defs[SERVING_SIGNATURE].inputs))
            loaded.batcher = Batcher(
                lambda images: loaded.run(SERVING_SIGNATURE, {input_key: images}),
                self.batching,
                name=f"{self.config.name}-v{version}",
            )
        return loaded

    def resolve(self, version: int | None, label: str | None) -> LoadedVersion:
        """The version a request addresses, with TF Serving's NOT_FOUND messages."""
        name = self.config.name
        if label is not None:
            if label not in self.config.version_labels:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = self.config.version_labels[label]
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
    """All served models, plus the poller that keeps them in step with their base paths."""

    def __init__(
        self,
        configs: list[ServedModelConfig],
        batching: BatchingOptions | None,
        poll_seconds: float = 1.0,
        num_threads: int = 4,
    ) -> None:
        self.models = {c.name: ServedModel(c, batching) for c in configs}
        self.batching = batching
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._executor = ThreadPoolExecutor(num_threads, thread_name_prefix="predict")

    def refresh(self) -> None:
        for model in self.models.values():
            model.refresh()

    def start(self) -> None:
        """Load what is on disk now, then keep polling in the background."""
        self.refresh()
        if self.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        for model in self.models.values():
            for loaded in model.versions.values():
                if loaded.batcher is not None:
                    loaded.batcher.close()
        self._executor.shutdown(wait=False)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 - keep polling whatever one pass hit
                log.error("version poll failed: %s", err)

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
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
