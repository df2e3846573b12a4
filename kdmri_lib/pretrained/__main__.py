"""``python -m kdmri_lib.pretrained``: list the shipped zoo (``.build`` rebuilds it)."""

from . import MANIFEST, describe

print(f"{MANIFEST}\n{describe()}")
