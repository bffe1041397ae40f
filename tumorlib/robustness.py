"""``python -m tumorlib.robustness`` keeps working: the command now lives in
``tumorlib.safety.robustness``."""

import sys

from tumorlib.safety.robustness import main

if __name__ == "__main__":
    sys.exit(main())
