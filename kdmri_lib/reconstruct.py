"""``python -m kdmri_lib.reconstruct``: a thin shim for :mod:`kdmri_lib.engine.reconstruct` (the library is laid out
by layer; this command keeps working)."""

import sys

from kdmri_lib.engine.reconstruct import *  # noqa: F401,F403
from kdmri_lib.engine.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
