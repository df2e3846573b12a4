"""``python -m kdmri_lib.pretrained [--markdown | --readme README.md]``: list the shipped zoo, print
it as Markdown, or write that table into a README's zoo block (``.build`` rebuilds the zoo)."""

import sys

from kdmri_lib.pretrained import MANIFEST, describe, markdown_table, update_readme

args = sys.argv[1:]
if "--markdown" in args:
    print(markdown_table())
elif "--readme" in args:
    i = args.index("--readme")
    path = args[i + 1] if i + 1 < len(args) else "README.md"
    print(f"{path}: {'updated' if update_readme(path) else 'already up to date'}")
else:
    print(f"{MANIFEST}\n{describe()}")
