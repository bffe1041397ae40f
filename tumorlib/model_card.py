"""``python -m tumorlib.model_card`` keeps working: the command now lives in
``tumorlib.evaluation.model_card``."""

import sys

from tumorlib.evaluation.model_card import main

if __name__ == "__main__":
    sys.exit(main())
