"""A run's log files: ``steps.csv`` (one row per step), ``history.csv`` (one row per epoch) and the
running sums of an epoch (plain data, so that an interrupt checkpoint can carry them)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from kdmri_lib.core import device as D

__all__ = ["STEP_COLUMNS", "EpochSums", "csv_text", "read_steps"]

#: leading columns of steps.csv (others follow in first-seen order)
STEP_COLUMNS = ("global_step", "epoch", "step", "lr", "t_lr", "loss", "rec", "edge", "kd", "feat", "att", "kl",
                "w_rec", "w_edge", "w_kd", "w_feat", "w_att", "dynamic", "warmup", "confidence_mean", "e_student",
                "e_teacher", "t_loss", "t_rec", "t_edge", "t_feedback", "t_rehearsal", "t_w_feedback", "t_wrong_fraction", "grad_norm",
                "t_grad_norm", "train_PSNR", "seconds")
_NOT_AVERAGED = ("global_step", "epoch", "step", "lr", "t_lr", "seconds")


def csv_text(rows: Sequence[Mapping[str, Any]], leading: Sequence[str] = ()) -> str:
    """CSV of ``rows`` (dicts): the ``leading`` columns first, then the others in first-seen order."""
    present: dict[str, None] = {}
    for r in rows:
        present.update(dict.fromkeys(r))
    cols = [c for c in leading if c in present] + [k for k in present if k not in set(leading)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def read_steps(path: Path, upto: int) -> list[dict]:
    """The rows of a ``steps.csv`` up to global step ``upto`` (a resumed run continues the log)."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            d = {}
            for k, v in r.items():
                if v in ("", None):
                    continue
                try:
                    d[k] = int(v) if k in ("global_step", "epoch", "step") else float(v)
                except ValueError:
                    d[k] = v
            if int(d.get("global_step", 0)) <= upto:
                rows.append(d)
    return rows


class EpochSums:
    """Running sums of the logged numbers of one epoch (plain data for interrupt checkpoints)."""

    def __init__(self, state: Optional[Mapping[str, Any]] = None):
        self.sums: dict[str, list] = {k: [float(v[0]), int(v[1])] for k, v in (state or {}).get("sums", {}).items()}
        self.seconds = float((state or {}).get("seconds", 0.0))

    def add(self, row: Mapping[str, float]) -> None:
        for k, v in row.items():
            if k in _NOT_AVERAGED or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            s = self.sums.setdefault(k, [0.0, 0])
            s[0] += float(v)
            s[1] += 1

    def means(self) -> dict[str, float]:
        return {k: s[0] / s[1] for k, s in self.sums.items() if s[1]}

    def reduced_means(self) -> dict[str, float]:
        """Epoch means over every rank's steps (all ranks log the same terms; a plain mean without
        a process group)."""
        if not D.is_distributed():
            return self.means()
        keys = sorted(self.sums)
        t = torch.tensor([[self.sums[k][0], float(self.sums[k][1])] for k in keys], dtype=torch.float64)
        t = D.all_reduce_sum(t)
        return {k: float(t[i, 0] / t[i, 1]) for i, k in enumerate(keys) if t[i, 1] > 0}

    def state(self, extra_seconds: float = 0.0) -> dict:
        return {"sums": {k: [s[0], s[1]] for k, s in self.sums.items()}, "seconds": self.seconds + extra_seconds}


