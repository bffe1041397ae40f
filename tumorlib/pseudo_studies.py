"""``python -m tumorlib.pseudo_studies`` keeps working: the command now lives in
``tumorlib.studies.pseudo_study_report``."""

import sys

from tumorlib.studies.pseudo_study_report import main

if __name__ == "__main__":
    sys.exit(main())
