r"""Memoised teacher computations for distillation on deterministic training samples.

A frozen ViT teacher computes the same thing every time it sees the same measurement; on the demo's
``sr`` training slices (whole slices, no augmentation) the distillation loop shows it each slice
dozens of times, and with test-time augmentation (:func:`kdmri_lib.distill.teacher_tta`) four times
per visit. The ``small`` Swin's forward pass costs about 6x the tiny student's whole training step
on a CPU, so a loop that recomputes it spends almost all its time on outputs it already had.

:class:`TeacherCache` wraps a :class:`~kdmri_lib.models.teacher.SwinTeacher` and memoises, per
measurement (keyed by a hash of the sample's bytes, so it is exact and needs no index), the output
of its **body** (:meth:`SwinTeacher.body`: deep features + group token maps) and, while its head is
frozen too, the image. Two modes:

- **frozen teacher** (no parameter trainable): images, token maps and test-time-augmented labels
  are computed once per measurement and reused; the results equal the uncached teacher's (up to
  float rounding of batched vs. per-sample convolutions, ~1e-6).
- **head correction** (``t_params="head"``: only :meth:`SwinTeacher.head_parameters` learn, the
  body stays frozen): the body is memoised, the head runs live with gradients (the corrected
  teacher is cheap to run), and every ``relabel_every`` teacher steps (:meth:`step`) a snapshot of
  the current head replaces the one that memoised images and augmented labels come from, which are
  then recomputed on their next use — the teacher's corrections reach the pool's labels while it
  teaches.

Shapes: ``forward(y, op, return_features)`` as any reconstruction model (``y``: complex
``(B, 1, h, w)``; image ``(B, 1, H, W)`` float32, token maps ``[(B, C, h, w)]``); ``label(y, op)``
returns ``(mean, std)`` of the augmented predictions, each ``(B, 1, H, W)``.

Only for operators without per-sample state (``sr``: the operator depends only on the shape and
the factor); ``cs`` draws random masks per training sample, so nothing would repeat
(:func:`usable` says when a cache applies).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Optional

import torch
import torch.nn as nn

from kdmri_lib.core.device import autocast
from kdmri_lib.core.errors import ConfigError


def teacher_tta(teacher: nn.Module, y: torch.Tensor, op, first: Optional[torch.Tensor] = None,
                amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's prediction under test-time augmentation, and its spread (no gradient).

    Flips of the image are measured again with the same operator, ``y_f = A flip(A^H y)``,
    reconstructed, and flipped back: ``sr``: flips along both axes and both together (the
    low-resolution block is symmetric up to one line); ``cs``: along the fully-sampled rows only (a
    column flip would move the measured columns). ``first``: the un-augmented prediction when it is
    already computed. Returns ``(mean, std)``, each ``(B, 1, H, W)`` float32.
    """
    flips = ((-2,), (-1,), (-2, -1)) if getattr(op, "task", "sr") == "sr" or not hasattr(op, "mask") else ((-2,),)
    with torch.no_grad(), autocast(y.device, amp):
        preds = [first.detach().float() if first is not None else teacher(y, op).float()]
        x0 = op.adjoint(y)
        for dims in flips:
            yf = op.forward(torch.flip(x0, dims))
            preds.append(torch.flip(teacher(yf, op).float(), dims))
    p = torch.stack(preds)
    return p.mean(0), p.std(0, unbiased=False)



#: entries kept at most (a cache that outgrows this is cleared: the samples do not repeat)
MAX_ENTRIES = 20000


def usable(task: str, varying: bool, teacher: nn.Module) -> bool:
    """Whether a run's teacher can be memoised: ``sr`` (no per-sample operator state), samples that
    are the same each time they are drawn (``varying``: natural-image crops or random warps, i.e.
    ``cfg.natural or cfg.augment``, are not) and a teacher with a body/head split."""
    return task == "sr" and not varying and hasattr(teacher, "body") and hasattr(teacher, "head")


_STORES: dict[tuple, dict] = {}


def shared_store(checkpoint: str, frozen: bool) -> dict:
    """The memo of teacher ``checkpoint`` (a file) shared within this process: every entry for a
    frozen teacher (its outputs depend only on the file), only the body's for a head correction
    (its head changes per run). Keyed by the file's resolved path, size and modification time."""
    import os

    st = os.stat(checkpoint)
    key = (os.path.realpath(checkpoint), st.st_size, st.st_mtime_ns)
    base = _STORES.setdefault(key, {})
    if frozen:
        return base
    return {"body": base.setdefault("body", {})}


def sample_key(y: torch.Tensor) -> bytes:
    """A 16-byte digest of one measurement (its dtype, shape and bytes)."""
    a = y.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype}{tuple(a.shape)}".encode())
    h.update(a.view(torch.uint8).numpy().tobytes() if a.is_complex() else a.numpy().tobytes())
    return h.digest()


class TeacherCache(nn.Module):
    """A teacher with memoised body (and, when frozen, head) outputs; see the module docstring.

    Args:
        teacher: a :class:`~kdmri_lib.models.teacher.SwinTeacher` whose body parameters are frozen
            (``requires_grad=False``); its head may be trainable.
        relabel_every: teacher steps after which memoised augmented labels are recomputed (head
            correction only; ``>= 1``).
        store: the dicts to memoise into (:func:`shared_store`: shared by the runs of one process
            that use the same teacher checkpoint, e.g. the ablation's rows and seeds); None: private.
    """

    def __init__(self, teacher: nn.Module, relabel_every: int = 100, store: Optional[dict] = None):
        super().__init__()
        if not (hasattr(teacher, "body") and hasattr(teacher, "head")):
            raise ConfigError(f"TeacherCache needs a teacher with body() and head() (a SwinTeacher); got "
                              f"{type(teacher).__name__}")
        head_ids = {id(p) for p in teacher.head_parameters()}
        if any(p.requires_grad and id(p) not in head_ids for p in teacher.parameters()):
            raise ConfigError("TeacherCache: the teacher's body must be frozen (only head_parameters() may learn)")
        if int(relabel_every) < 1:
            raise ConfigError(f"relabel_every must be >= 1; got {relabel_every!r}")
        self.teacher = teacher
        # what memoised images and labels are computed with: the head as of the last relabelling
        # (a pure function of the training state, so a resumed run labels exactly as an
        # uninterrupted one)
        self.label_tail = copy.deepcopy(teacher.tail).requires_grad_(False)
        self.relabel_every = int(relabel_every)
        self.version = 0
        self.teacher_steps = 0
        store = store if store is not None else {}
        self._body: dict[bytes, dict] = store.setdefault("body", {})
        self._image: dict[bytes, torch.Tensor] = store.setdefault("image", {})
        self._label: dict[bytes, tuple[int, torch.Tensor, torch.Tensor]] = store.setdefault("label", {})
        self.hits = self.misses = 0

    # -- bookkeeping ------------------------------------------------------------------------------
    @property
    def head_trainable(self) -> bool:
        return any(p.requires_grad for p in self.teacher.head_parameters())

    def step(self) -> None:
        """One teacher optimiser step happened: every ``relabel_every`` steps the memoised labels and
        images (which depend on the head) become stale."""
        self.teacher_steps += 1
        if self.teacher_steps % self.relabel_every == 0:
            self.version += 1
            self._image.clear()
            self.label_tail.load_state_dict(self.teacher.tail.state_dict())

    def state(self) -> dict:
        """What a checkpoint needs to resume the labelling exactly (plain tensors and ints)."""
        return {"teacher_steps": self.teacher_steps, "version": self.version,
                "label_tail": {k: v.detach().cpu().clone() for k, v in self.label_tail.state_dict().items()}}

    def load_state(self, d: dict) -> None:
        self.teacher_steps, self.version = int(d["teacher_steps"]), int(d["version"])
        self.label_tail.load_state_dict(d["label_tail"])
        self.clear()

    def clear(self) -> None:
        """Forget every memoised image and label (the body outputs stay: the body never changes)."""
        self._image.clear()
        self._label.clear()

    def clear_all(self) -> None:
        self.clear()
        self._body.clear()

    def __len__(self) -> int:
        return len(self._body)

    def _room(self) -> None:
        if len(self._body) + len(self._label) > MAX_ENTRIES:
            self.clear_all()

    # -- body -------------------------------------------------------------------------------------
    def _bodies(self, y: torch.Tensor, op, keys: list[bytes], features: bool) -> dict:
        """The batch's body outputs (memoised), collated."""
        miss = [i for i, k in enumerate(keys) if k not in self._body or (features and not self._body[k]["features"])]
        self.hits += len(keys) - len(miss)
        self.misses += len(miss)
        if miss:
            self._room()
            with torch.no_grad():
                b = self.teacher.body(y[miss], op, return_features=features)
            for j, i in enumerate(miss):
                self._body[keys[i]] = {"f": b["f"][j].detach(), "hw": b["hw"],
                                       "features": [t[j].detach() for t in b["features"]],
                                       "std": None if b["std"] is None else b["std"][j].detach()}
        entries = [self._body[k] for k in keys]
        std = None if entries[0]["std"] is None else torch.stack([e["std"] for e in entries])
        feats = ([torch.stack([e["features"][g] for e in entries]) for g in range(len(entries[0]["features"]))]
                 if features else [])
        return {"f": torch.stack([e["f"] for e in entries]), "hw": entries[0]["hw"], "features": feats, "std": std}

    # -- the model interface ----------------------------------------------------------------------
    def forward(self, y: torch.Tensor, op, return_features: bool = False):
        y = self.teacher.check_inputs(y, op)
        keys = [sample_key(y[i]) for i in range(y.shape[0])]
        live = self.head_trainable and torch.is_grad_enabled()
        body = self._bodies(y, op, keys, return_features)
        if live:
            image = self.teacher.head(body, y, op).float()
        else:
            missing = [i for i, k in enumerate(keys) if k not in self._image]
            if missing:
                with torch.no_grad():
                    sub = {"f": body["f"][missing], "hw": body["hw"], "features": [],
                           "std": None if body["std"] is None else body["std"][missing]}
                    out = self.teacher.head(sub, y[missing], op, tail=self.label_tail).float()
                for j, i in enumerate(missing):
                    self._image[keys[i]] = out[j].detach()
            image = torch.stack([self._image[k] for k in keys])
        return (image, body["features"]) if return_features else image

    def label(self, y: torch.Tensor, op, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The test-time-augmented label ``(mean, std)`` of each sample (:func:`teacher_tta` through
        this cache), memoised until the head's next relabelling."""
        y = self.teacher.check_inputs(y, op)
        keys = [sample_key(y[i]) for i in range(y.shape[0])]
        stale = [i for i, k in enumerate(keys) if k not in self._label or self._label[k][0] != self.version]
        if stale:
            self._room()
            with torch.no_grad():
                mean, std = teacher_tta(self, y[stale], op, amp=amp)
            for j, i in enumerate(stale):
                self._label[keys[i]] = (self.version, mean[j].detach(), std[j].detach())
        return (torch.stack([self._label[k][1] for k in keys]), torch.stack([self._label[k][2] for k in keys]))
