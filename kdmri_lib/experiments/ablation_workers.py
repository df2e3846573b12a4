"""Sharing the ablation's training runs among ``--jobs N`` worker processes: a deterministic split
of the (row, seed) runs by their measured relative cost, and the workers themselves
(``python -m kdmri_lib.ablation ... --worker k/N``, ``cpu_count // N`` threads each).
"""

from __future__ import annotations

import sys
from typing import Sequence

from kdmri_lib.core.errors import KdmriError

__all__ = ["shares", "run_workers"]


#: relative cost of one training run, by row name or else by kind (for sharing the runs among --jobs
#: workers); from one-seed runs at 2 x 1200 steps (2 threads): student 187 s, oracle-size batch 271 s, output KD
#: 340 s; the U-Net from its zoo run (0.23 s per step against the student's 0.11 s)
_COST = {"unet": 2.1, "student": 1.0, "student_matched": 1.45, "distill": 1.8, "kd_vanilla": 2.0, "full": 2.3}


def shares(runs: Sequence[tuple[str, int]], n: int, what_of: dict) -> list[list[tuple[str, int]]]:
    """Split ``runs`` ((row, seed) pairs) into ``n`` lists of about equal cost (longest first,
    each to the least-loaded share); deterministic, so every worker computes the same split."""
    def cost(r):
        return _COST.get(r[0], _COST.get(what_of[r[0]], 1.0))

    out: list[list[tuple[str, int]]] = [[] for _ in range(n)]
    load = [0.0] * n
    for r in sorted(runs, key=lambda r: -cost(r)):
        k = min(range(n), key=lambda j: (load[j], j))
        out[k].append(r)
        load[k] += cost(r)
    return out


def run_workers(s, pending, log) -> None:
    """Train the pending runs in ``s.jobs`` processes of ``cpu_count // jobs`` threads each (small
    models use a few cores poorly, so two one-thread processes beat one two-thread one), then return."""
    import os
    import subprocess

    n = min(s.jobs, len(pending))
    threads = max(1, (os.cpu_count() or 1) // n)
    argv = list(s.argv or [])
    log(f"[ablation] training {len(pending)} run(s) in {n} worker processes ({threads} thread(s) each) ...")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = []
    for k in range(n):
        cmd = [sys.executable, "-m", "kdmri_lib.experiments.ablation", *argv, "--jobs", "1", "--worker", f"{k + 1}/{n}",
               "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise KdmriError(f"ablation worker(s) failed (exit codes {codes}); run the same command again to resume")
