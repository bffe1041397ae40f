"""``python -m serving.export RUN``: export a trained run (see :mod:`serving.export.exporter`)."""

import sys

from serving.export.exporter import main

sys.exit(main())
