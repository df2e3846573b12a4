"""``python -m kdmri_lib.pilots``: a thin shim for :mod:`kdmri_lib.experiments.pilots` (the library is laid out
by layer; this command keeps working)."""

import sys

from kdmri_lib.experiments.pilots import *  # noqa: F401,F403
from kdmri_lib.experiments.pilots import main

if __name__ == "__main__":
    sys.exit(main())
