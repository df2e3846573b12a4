"""``python -m kdmri_lib.notebook_runner``: a thin shim for :mod:`kdmri_lib.teaching.notebook_runner` (the library is laid out
by layer; this command keeps working)."""

import sys

from kdmri_lib.teaching.notebook_runner import *  # noqa: F401,F403
from kdmri_lib.teaching.notebook_runner import main

if __name__ == "__main__":
    sys.exit(main())
