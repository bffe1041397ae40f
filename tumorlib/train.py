"""``python -m tumorlib.train`` keeps working: the command now lives in
``tumorlib.training.train``."""

import sys

from tumorlib.training.train import main

if __name__ == "__main__":
    sys.exit(main())
