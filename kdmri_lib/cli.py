"""The ``kdmri`` command (``[project.scripts]``): one entry point for every command-line tool.

    kdmri train student --data data/demo --out runs/student     # = python -m kdmri_lib.train
    kdmri reconstruct --checkpoint pretrained:sr4_student_tiny --data data/demo --out runs/rec --evaluate
    kdmri ablation --out runs/bench                              # = make bench-distill
    kdmri bench --out runs/bench                                 # = make bench (params / FLOPs / latency)
    kdmri notebooks --out runs/demo                              # the five notebooks, headless (make demo)
    kdmri pretrained --data data/demo                            # rebuild the zoo (make pretrained)
    kdmri data demo --out data/demo                              # also: data fastmri | brain-tumor | natural

Each command is the ``main(argv)`` of its module, so ``python -m kdmri_lib.<module>`` and the
``data_scripts/`` shims keep working and take the same flags; ``kdmri COMMAND --help`` lists them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

__all__ = ["COMMANDS", "DATA_COMMANDS", "main"]

#: command -> (module, function, one line of help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("kdmri_lib.engine.train", "main", "train a teacher, a student or a U-Net, or distil (exact resume, DDP)"),
    "reconstruct": ("kdmri_lib.engine.reconstruct", "main", "reconstruct a data folder with a checkpoint or a baseline; "
                                                     "fastMRI's evaluation"),
    "ablation": ("kdmri_lib.experiments.ablation", "main", "the distillation ablation (seeds, paired bootstrap intervals)"),
    "bench": ("kdmri_lib.experiments.benchmark", "main", "parameters, FLOPs and latency of the models"),
    "notebooks": ("kdmri_lib.teaching.notebook_runner", "main", "run the five notebooks headless with papermill"),
    "pretrained": ("kdmri_lib.pretrained.build", "main", "rebuild the shipped zoo (resumable)"),
    "pilots": ("kdmri_lib.experiments.pilots", "main", "the pilot measurements behind the ablation's diagnosis (docs/training.md)"),
}
#: ``kdmri data SOURCE``: source -> function of :mod:`kdmri_lib.data_cli`, one line of help
DATA_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "build the embedded demo data (offline)"),
    "fastmri": ("fastmri", "verify, index and lay out the fastMRI single-coil knee data you downloaded"),
    "brain-tumor": ("brain_tumor", "the Kaggle brain tumour MRI images as simulated single-coil k-space"),
    "natural": ("natural", "Flickr2K and Set5 (the paper's natural images)"),
}


def _usage() -> str:
    lines = ["usage: kdmri COMMAND [ARGS...]   (kdmri COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += [f"  {'data':<12} prepare a data set: " + ", ".join(DATA_COMMANDS)]
    lines += [f"    data {name:<12} {help_}" for name, (_, help_) in DATA_COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to a command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "data":
        if not rest or rest[0] not in DATA_COMMANDS:
            given = f"{rest[0]!r}; " if rest and rest[0] not in ("-h", "--help") else ""
            print(f"kdmri data: expected one of {', '.join(DATA_COMMANDS)}; {given}e.g. kdmri data demo --out data/demo",
                  file=sys.stderr if given or not rest else sys.stdout)
            return 2 if given or not rest else 0
        from kdmri_lib import data_cli

        return int(getattr(data_cli, DATA_COMMANDS[rest[0]][0])(rest[1:]) or 0)
    if cmd not in COMMANDS:
        print(f"kdmri: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[cmd]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
