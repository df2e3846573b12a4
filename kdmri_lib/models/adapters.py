r"""Adapters for heterogeneous feature distillation: CNN student features -> ViT teacher token maps.

The student (:class:`~.student.UnrolledStudent`) returns ``L`` decoder maps, coarse to fine,
``(B, C_s[l], h_l, w_l)``; the teacher (:class:`~.teacher.SwinTeacher`) returns ``G`` token maps,
one per residual Swin group, all ``(B, C_t, h_T, w_T)`` (``sr``: the low-resolution grid; ``cs``:
the full image). An adapter turns one student map into the shape of one teacher map::

    adapted = resize_bilinear( conv1x1(C_s -> C_t)(student_map), (h_T, w_T) )

Pairing rule (deterministic, order-preserving, aligned at the deep / fine end)
------------------------------------------------------------------------------
Every teacher group ``g = 0..G-1`` is paired with exactly one student map::

    student_index(g) = (L - 1) - floor((G - 1 - g) * L / G)

so the teacher's **last** group is paired with the student's **finest** (last, most processed)
map, earlier groups with coarser maps, evenly spread. Examples (``G`` teacher groups, ``L``
student maps): ``G = L``: identity (group ``g`` <-> map ``g``); ``G = 6, L = 3`` (paper presets):
groups 0,1 -> map 0, groups 2,3 -> map 1, groups 4,5 -> map 2; ``G = 2, L = 3``: group 0 -> map 1,
group 1 -> map 2 (the coarsest student map is not used). Student maps may be shared by several
groups; each *pair* has its own 1x1 convolution, and every adapter parameter is used in every
forward pass (no unused parameters under DistributedDataParallel).

The same pairing serves attention transfer (:func:`kdmri_lib.distill.losses.attention_transfer`), which
compares the raw student map of each pair with the teacher's map (no adapter needed: spatial
attention maps are architecture-agnostic) — see :meth:`Adapters.pair_student`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdmri_lib.core.errors import ConfigError


def pairing(num_teacher: int, num_student: int) -> list[int]:
    """Student map index for each teacher group (see the module docstring).

    Args:
        num_teacher: ``G``, number of teacher token maps (>= 1).
        num_student: ``L``, number of student maps (>= 1).

    Returns:
        list of ``G`` indices into the student's feature list, non-decreasing, last one ``L - 1``.
    """
    G, L = int(num_teacher), int(num_student)
    if G < 1 or L < 1:
        raise ConfigError(f"feature pairing needs at least one map on each side; got {G} teacher and {L} student maps")
    return [(L - 1) - ((G - 1 - g) * L) // G for g in range(G)]


class Adapters(nn.Module):
    """1x1 convolutions (+ bilinear resize) from student feature maps to teacher token maps.

    Args:
        student_channels: ``C_s`` of each student map (``student.feature_channels``), coarse to fine.
        teacher_channels: ``C_t`` of each teacher map (``teacher.feature_channels``).

    Attributes:
        pairs: ``pairs[g]`` = the student map index paired with teacher map ``g`` (:func:`pairing`).
        convs: one ``Conv2d(C_s[pairs[g]], C_t[g], 1)`` per teacher map.

    ``forward(student_feats, teacher_sizes)`` returns one ``(B, C_t[g], h_g, w_g)`` float map per
    teacher map (computed in float32; under autocast the student features may be bf16).
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]):
        super().__init__()
        self.student_channels = [int(c) for c in student_channels]
        self.teacher_channels = [int(c) for c in teacher_channels]
        self.pairs = pairing(len(self.teacher_channels), len(self.student_channels))
        self.convs = nn.ModuleList(
            nn.Conv2d(self.student_channels[s], c_t, kernel_size=1) for s, c_t in zip(self.pairs, self.teacher_channels)
        )

    @classmethod
    def for_models(cls, student: nn.Module, teacher: nn.Module) -> "Adapters":
        """Adapters from ``student.feature_channels`` to ``teacher.feature_channels`` (DDP-wrapped
        models are unwrapped)."""
        s = getattr(student, "module", student)
        t = getattr(teacher, "module", teacher)
        if not s.feature_channels or not t.feature_channels:
            raise ConfigError(f"feature distillation needs models that return features; got {type(s).__name__} "
                              f"({s.feature_channels}) and {type(t).__name__} ({t.feature_channels})")
        return cls(s.feature_channels, t.feature_channels)

    @property
    def config(self) -> dict:
        return {"student_channels": list(self.student_channels), "teacher_channels": list(self.teacher_channels)}

    def pair_student(self, student_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The raw student map of each pair (``len == G``), for attention transfer."""
        self._check(student_feats)
        return [student_feats[s] for s in self.pairs]

    def _check(self, student_feats: Sequence[torch.Tensor]) -> None:
        if len(student_feats) != len(self.student_channels):
            raise ConfigError(f"adapters expect {len(self.student_channels)} student feature maps; got {len(student_feats)}")
        for i, (f, c) in enumerate(zip(student_feats, self.student_channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ConfigError(f"student feature map {i} must be (B, {c}, h, w); got {tuple(f.shape)}")

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Adapt the student's maps to the teacher's token-map sizes.

        Args:
            student_feats: the student's feature list (coarse to fine), ``(B, C_s[l], h_l, w_l)``.
            teacher_sizes: ``(h_g, w_g)`` of each teacher map (``[f.shape[-2:] for f in teacher_feats]``).

        Returns:
            list of ``G`` float32 maps ``(B, C_t[g], h_g, w_g)``.
        """
        self._check(student_feats)
        if len(teacher_sizes) != len(self.convs):
            raise ConfigError(f"adapters were built for {len(self.convs)} teacher maps; got {len(teacher_sizes)} sizes")
        out = []
        for conv, s, size in zip(self.convs, self.pairs, teacher_sizes):
            a = conv(student_feats[s].float())
            size = tuple(int(v) for v in size)
            if tuple(a.shape[-2:]) != size:
                a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            out.append(a)
        return out
