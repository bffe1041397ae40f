"""``tumorlib build``: build the configs of the ``brain_mri`` dataset and print their statistics.

The main job's first step, on its own. The archive is read from ``--manual-dir``, else from
``$TUMORLIB_SHARED/data`` or ``../shared/data`` (relative to the current folder) when one exists,
else downloaded by the builder. A config already built is reused. ``multi_sequence`` needs the
TCGA-LGG archive in the manual dir too; without it that config is left out, and said so.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tumorlib.contracts.cli import run_command
from tumorlib.data.shared import ENV_SHARED, shared_data_dir


def default_manual_dir() -> Path | None:
    """Where to look for the archive when none is given; ``None`` lets the builder download it."""
    return shared_data_dir()


def buildable_configs(manual_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """Every config, less ``multi_sequence`` where the manual dir lacks the TCGA-LGG archive."""
    from brain_mri import lgg
    from brain_mri.planning import CONFIGS, MULTI_SEQUENCE

    manual = manual_dir if manual_dir is not None else default_manual_dir()
    if manual is not None and lgg.find_archive(Path(manual)) is not None:
        return CONFIGS
    return tuple(c for c in CONFIGS if c != MULTI_SEQUENCE)


def build_dataset(
    manual_dir: str | os.PathLike | None,
    data_dir_: str | os.PathLike,
    configs: tuple[str, ...] | None = None,
) -> tuple[str, ...]:
    """Build ``configs`` (default: :func:`buildable_configs`; a built config is reused), print
    their statistics, and return them."""
    from brain_mri.report import format_report
    from tumorlib.data.pipeline import CONFIGS, build

    if manual_dir is None:
        manual_dir = default_manual_dir()
    configs = configs or buildable_configs(manual_dir)
    for config in configs:
        builder = build(config, manual_dir, data_dir_)
        print(format_report(config, dict(builder.info.metadata)), flush=True)
    for config in sorted(set(CONFIGS) - set(configs)):
        print(f"brain_mri/{config}: not built (no TCGA-LGG archive in {manual_dir})", flush=True)
    return configs


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--manual-dir`` and ``--data-dir``, as every command that builds the dataset takes them."""
    parser.add_argument(
        "--manual-dir",
        help=f"folder holding the archive (default ${ENV_SHARED}/data or ../shared/data if "
        "present, else download)",
    )
    parser.add_argument(
        "--data-dir", help="TFDS data dir (default $TFDS_DATA_DIR, else data/tensorflow_datasets)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib build",
        description="Build the brain_mri dataset's configs (clean, original, and multi_sequence "
        "where the TCGA-LGG archive is in the manual dir).",
    )
    add_dataset_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from tumorlib.data.pipeline import data_dir

        build_dataset(args.manual_dir, data_dir(args.data_dir))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
