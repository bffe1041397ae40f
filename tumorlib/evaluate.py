"""``python -m tumorlib.evaluate`` keeps working: the command now lives in
``tumorlib.evaluation.evaluate``."""

import sys

from tumorlib.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
