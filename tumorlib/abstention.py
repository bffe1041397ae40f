"""``python -m tumorlib.abstention`` keeps working: the command now lives in
``tumorlib.safety.abstention_report``."""

import sys

from tumorlib.safety.abstention_report import main

if __name__ == "__main__":
    sys.exit(main())
