"""``python -m kdmri_lib.benchmark``: a thin shim for :mod:`kdmri_lib.experiments.benchmark` (the library is laid out
by layer; this command keeps working)."""

import sys

from kdmri_lib.experiments.benchmark import *  # noqa: F401,F403
from kdmri_lib.experiments.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
