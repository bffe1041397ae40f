"""``python -m tumorlib.ensemble`` keeps working: the command now lives in
``tumorlib.training.ensemble_run``."""

import sys

from tumorlib.training.ensemble_run import main

if __name__ == "__main__":
    sys.exit(main())
