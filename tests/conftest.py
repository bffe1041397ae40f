"""Fixtures shared across test modules, built once per session (export and server start-up cost
tens of seconds on two cores). The builders themselves live in ``tests/fixtures/serving.py``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.serving import ServingStack, make_fixture_run


@pytest.fixture(scope="session")
def serving_stack() -> Iterator[ServingStack]:
    """Two exported versions of the fixture model behind one ``python -m serving.local``."""
    stack = ServingStack()
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def fixture_export(tmp_path_factory) -> Path:
    """A model base path holding one export of the fixture run (no abstention, no gate)."""
    from serving.export.exporter import export_run

    root = tmp_path_factory.mktemp("export")
    run = make_fixture_run(root / "runs" / "fx")
    base = root / "models" / "brain_mri"
    export_run(run, base)
    return base


@pytest.fixture(scope="session")
def plain_export(tmp_path_factory) -> Path:
    """A model base path holding one export of a model without backbone/head (no Grad-CAM)."""
    from serving.export.exporter import export_run

    root = tmp_path_factory.mktemp("plain-export")
    base = root / "models" / "brain_mri"
    export_run(make_fixture_run(root / "runs" / "plain", plain=True), base)
    return base


@pytest.fixture(scope="session")
def similar_export(tmp_path_factory):
    """The fixture run exported with a similar-cases index of a small generated dataset."""
    from tests.fixtures.similar import build_similar_export

    return build_similar_export(tmp_path_factory.mktemp("similar-export"))


@pytest.fixture(autouse=True)
def _audit_in_tmp(monkeypatch, tmp_path_factory) -> None:
    """Every test's audit records go to a temporary SQLite file, never the user's data dir.

    The page and ``tumorlib predict`` record each answer (docs/audit.md); tests that check the
    records set their own path (tests/fixtures/audit.py ``audit_env``).
    """
    folder = tmp_path_factory.mktemp("audit")
    monkeypatch.setenv("TUMORLIB_AUDIT_URL", f"sqlite:///{folder / 'audit.sqlite'}")
    monkeypatch.setenv("TUMORLIB_AUDIT_SPOOL", str(folder / "spool.jsonl"))


# -- test order: tests must pass in any order --------------------------------------------------


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--test-order",
        choices=("file", "reverse", "shuffle"),
        default="file",
        help="run modules and the tests inside each in file order, reversed, or shuffled "
        "(seeded by --test-order-seed); a test that only passes after another one is a bug",
    )
    parser.addoption("--test-order-seed", type=int, default=0)


def pytest_collection_modifyitems(config, items) -> None:
    """Reverse or shuffle, module by module (a module's fixtures are still built once)."""
    order = config.getoption("--test-order")
    if order == "file":
        return
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    groups = list(modules.values())
    if order == "reverse":
        groups = [list(reversed(group)) for group in reversed(groups)]
    else:
        rng = random.Random(config.getoption("--test-order-seed"))
        rng.shuffle(groups)
        for group in groups:
            rng.shuffle(group)
    items[:] = [item for group in groups for item in group]
