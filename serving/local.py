"""``python -m serving.local`` keeps working: the command now lives in ``serving.server.local``."""

import sys

from serving.server.local import main

if __name__ == "__main__":
    sys.exit(main())
