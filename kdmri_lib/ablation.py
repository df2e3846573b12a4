"""``python -m kdmri_lib.ablation``: a thin shim for :mod:`kdmri_lib.experiments.ablation` (the library is laid out
by layer; this command keeps working)."""

import sys

from kdmri_lib.experiments.ablation import *  # noqa: F401,F403
from kdmri_lib.experiments.ablation import main

if __name__ == "__main__":
    sys.exit(main())
