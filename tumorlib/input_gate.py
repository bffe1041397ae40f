"""``python -m tumorlib.input_gate`` keeps working: the command now lives in
``tumorlib.safety.input_gate``."""

import sys

from tumorlib.safety.input_gate import main

if __name__ == "__main__":
    sys.exit(main())
