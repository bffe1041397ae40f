"""Fixtures shared across test modules, built once per session (export and server start-up cost
tens of seconds on two cores). The builders themselves live in ``tests/serving_fixtures.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving_fixtures import ServingStack, make_fixture_run


@pytest.fixture(scope="session")
def serving_stack() -> Iterator[ServingStack]:
    """Two exported versions of the fixture model behind one ``python -m serving.local``."""
    stack = ServingStack()
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def fixture_export(tmp_path_factory) -> Path:
    """A model base path holding one export of the fixture run (no abstention, no gate)."""
    from serving.export import export_run

    root = tmp_path_factory.mktemp("export")
    run = make_fixture_run(root / "runs" / "fx")
    base = root / "models" / "brain_mri"
    export_run(run, base)
    return base


@pytest.fixture(scope="session")
def plain_export(tmp_path_factory) -> Path:
    """A model base path holding one export of a model without backbone/head (no Grad-CAM)."""
    from serving.export import export_run

    root = tmp_path_factory.mktemp("plain-export")
    base = root / "models" / "brain_mri"
    export_run(make_fixture_run(root / "runs" / "plain", plain=True), base)
    return base
