"""A package's public API, resolved on first use (PEP 562): ``__getattr__`` and ``__dir__``.

Why lazy: most of the library imports TensorFlow, which costs seconds; a package's ``__init__``
that imported its modules eagerly would make ``import tumorlib.inputs.policy`` (TensorFlow-free,
used by light clients) pay for its siblings too. Each ``__init__`` names its public objects and
the module that defines them; nothing is imported until a name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map name -> submodule."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
