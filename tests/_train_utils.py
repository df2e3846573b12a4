"""Small helpers shared by the training / distillation / reconstruction tests (tiny, fast configs)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from kdmri_lib.engine.train import TrainConfig


def tiny_cfg(demo_dir, out, **kw) -> TrainConfig:
    """A training config that runs in a few seconds on 2 CPU cores."""
    base = dict(mode="student", data_dir=str(demo_dir), out_dir=str(out), task="sr", factor=4, preset="tiny",
                epochs=1, batch_size=2, steps_per_epoch=3, val_slices=2, device="cpu",
                progress=False, verbose=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def state_of(path) -> dict:
    """The model weights stored in a checkpoint."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f"{k} differs (max |diff| {float((a[k] - b[k]).abs().max()):.3g})"
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


#: ``python TRAIN_DRIVER HOW AT [READY GO] ARGS...`` runs ``python -m kdmri_lib.train ARGS`` and, at a
#: chosen point, dies or pauses, so that tests interrupt a real training process at an exact step
#: rather than after a guessed sleep:
#: ``kill`` / ``term``: SIGKILL / SIGTERM to itself after global step AT;
#: ``kill-in-write``: SIGKILL half-way through the AT-th checkpoint write (the file left truncated);
#: ``pause``: after global step AT, touch READY and wait (at most 300 s) until GO exists — the test
#: signals the process from outside in between.
TRAIN_DRIVER = textwrap.dedent(r'''
    import os, signal, sys, time
    from pathlib import Path
    import torch
    from kdmri_lib.engine import train as T
    how, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if how == "pause":
        ready, go, argv = Path(argv[0]), Path(argv[1]), argv[2:]
    if how in ("kill", "term", "pause"):             # after global step `at` (a public step hook)
        def step(trainer, row):
            if row["global_step"] == at and how == "pause":
                ready.touch()
                t0 = time.time()
                while not go.exists() and time.time() - t0 < 300:
                    time.sleep(0.01)
            elif row["global_step"] == at:
                os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGTERM)
        T.add_step_hook(step)
    elif how == "kill-in-write":                     # half-way through the `at`-th checkpoint write
        real_save, n = torch.save, [0]
        def save(obj, f, *a, **k):
            n[0] += 1
            real_save(obj, f, *a, **k)
            if n[0] == at:
                data = open(f, "rb").read()
                with open(f, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
    sys.exit(T.main(argv))
''')
