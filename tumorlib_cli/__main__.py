"""``tumorlib``: one command with sub-commands (filled in by the apps-layer work)."""

from __future__ import annotations

import sys

from tumorlib import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        print(f"tumorlib {__version__}")
        return 0
    print("usage: tumorlib --version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
