"""The clockwork of a training run: per-epoch seeds, the resumable epoch sampler, the learning-rate
schedule and the SIGINT / SIGTERM stop flag (:mod:`kdmri_lib.engine.trainer` uses them)."""

from __future__ import annotations

import math
import signal
import threading
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

__all__ = ["epoch_seed", "EpochSampler", "lr_lambda", "StopFlag"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run with seed ``seed`` (a pure function, 32 bits)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch may be longer than one pass over the data set.

    Each epoch draws ``samples_per_replica * num_replicas`` indices from consecutive random
    permutations of the data set (a generator seeded with ``epoch_seed(seed, epoch)``; call
    :meth:`set_epoch`) and gives rank ``r`` the indices ``r, r + W, r + 2W, ...``. With one replica it
    is a seeded random sampler. Works without a process group (``num_replicas``/``rank`` are given).
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, samples_per_replica: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.samples_per_replica = int(samples_per_replica)

    def __iter__(self):
        n = len(self.dataset)
        total = self.samples_per_replica * self.num_replicas
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        chunks, have = [], 0
        while have < total:
            chunks.append(torch.randperm(n, generator=g))
            have += n
        idx = torch.cat(chunks)[:total]
        return iter(idx[self.rank: total: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.samples_per_replica


def lr_lambda(schedule: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Multiplicative LR factor as a function of the optimiser step (for ``LambdaLR``).

    The linear warm-up lasts ``warmup_steps``, capped at a quarter of the run, so that a short run
    (a notebook's few hundred steps) still reaches its peak learning rate.
    """
    total = max(int(total_steps), 1)
    warmup_steps = min(int(warmup_steps), total // 4)

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return 0.5 ** sum(step >= m for m in (total // 2, (3 * total) // 4))
        t = min(max(step - warmup_steps, 0) / max(total - warmup_steps, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return f



class StopFlag:
    """SIGINT / SIGTERM set a flag (a second SIGINT raises KeyboardInterrupt at once)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._previous[s] = signal.signal(s, self._handler)
                except (ValueError, OSError):  # pragma: no cover - exotic embeddings
                    pass
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
        return False

    @property
    def set(self) -> bool:
        return self.signum is not None

