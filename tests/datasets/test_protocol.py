"""The few-references protocol: who sees which ground truth, and the loss terms that use it.

The data-split tests prove that no ground truth of the measurement-only pool (or of a scored
slice) reaches the student, the teacher or the teacher's pre-training: corrupting it changes
nothing. The term tests check each new loss term's gradient where it should have one and none
where it should not, and the L1 + L1 dead zone with and without the fix.
"""

from __future__ import annotations

import shutil
from fnmatch import fnmatch
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _train_utils import state_of, tiny_cfg
from torch import nn

from kdmri_lib import distill as KD
from kdmri_lib.core.errors import ConfigError, DataError
from kdmri_lib.datasets import protocol as P
from kdmri_lib.datasets.data import MRISliceDataset, batch_operator, build_dataset
from kdmri_lib.distill import losses as L
from kdmri_lib.engine.train import fit

# --------------------------------------------------------------------------------------------
# the split
# --------------------------------------------------------------------------------------------

def test_split_references_takes_whole_volumes_and_the_pool_shares_none():
    vols = {f"v{i}.h5": list(range(10 * i, 10 * i + 6)) for i in range(6)}
    refs, pool = P.split_references(vols, 8, seed=0)
    assert len(refs) == 8 and len(set(refs)) == 8
    name_of = {i: n for n, idx in vols.items() for i in idx}
    assert not {name_of[i] for i in refs} & {name_of[i] for i in pool}        # no shared volume
    assert not set(refs) & set(pool)
    assert P.split_references(vols, 8, seed=0) == (refs, pool)                  # deterministic
    assert P.split_references(vols, 8, seed=1) != (refs, pool)
    assert len(pool) == 6 * 4                                                   # the partly used volume is dropped
    with pytest.raises(DataError, match="only 36 slices"):
        P.split_references(vols, 40)
    with pytest.raises(ConfigError, match="references"):
        P.split_references(vols, 0)


def test_measurement_only_samples_carry_no_ground_truth(demo_dir):
    ds = MRISliceDataset(Path(demo_dir) / "singlecoil_train", "sr", 4, include=["*_sagittal_*"])
    full, meas = ds[3], ds.measurement(3)
    assert torch.equal(full["y"], meas["y"]) and torch.equal(full["initial"], meas["initial"])
    assert float(meas["target"].abs().sum()) == 0.0 and float(meas["max"]) == 0.0 and float(meas["labelled"]) == 0.0
    assert meas["target"].shape == full["target"].shape
    train = build_dataset(demo_dir, "train", "sr", 4, include=["*_sagittal_*"], references=12, unlabelled=True)
    samples = [train[i] for i in range(8)]
    assert [float(s["labelled"]) for s in samples] == [1.0, 0.0] * 4             # interleaved 1:1
    assert all(float(s["target"].abs().sum()) == 0 for s in samples if s["labelled"] == 0)
    with pytest.raises(DataError, match="no .h5 file matches"):
        MRISliceDataset(Path(demo_dir) / "singlecoil_train", "sr", 4, include=["*_oblique_*"])


def test_config_checks_of_the_protocol(demo_dir, tmp_path):
    with pytest.raises(ConfigError, match="unlabelled"):
        tiny_cfg(demo_dir, tmp_path, unlabelled=True, references=4).validate()
    with pytest.raises(ConfigError, match="train_files"):
        tiny_cfg(demo_dir, tmp_path, train_files=[]).validate()
    with pytest.raises(ConfigError, match="natural"):
        tiny_cfg(demo_dir, tmp_path, references=4, natural=True).validate()


def _copy_with_corrupted_pool(demo_dir: Path, dst: Path, references: int) -> list[str]:
    """A data folder of the sagittal files (and the axial ones, the teacher's source domain) whose
    pool volumes have their stored ground truth replaced by noise; returns the corrupted file names."""
    _copy_protocol_files(demo_dir, dst)
    ds = MRISliceDataset(dst / "singlecoil_train", "sr", 4, include=["*_sagittal_*"])
    _, pool = P.split_references(ds.volumes(), references)
    names = sorted({ds.raw_samples[i][0].name for i in pool})
    rng = np.random.default_rng(0)
    for n in names:
        with h5py.File(dst / "singlecoil_train" / n, "r+") as hf:
            t = hf["reconstruction_esc"]
            t[...] = rng.random(t.shape).astype(t.dtype) * 1e3
            hf.attrs["max"] = 123.0
    return names


def _copy_protocol_files(demo_dir: Path, dst: Path) -> None:
    (dst / "singlecoil_train").mkdir(parents=True)
    for f in sorted((Path(demo_dir) / "singlecoil_train").glob("*.h5")):
        if "_sagittal_" in f.name or "_axial_" in f.name:
            shutil.copyfile(f, dst / "singlecoil_train" / f.name)
    shutil.copytree(Path(demo_dir) / "singlecoil_val", dst / "singlecoil_val")


@pytest.mark.slow
def test_no_ground_truth_of_the_pool_reaches_the_student_or_the_teacher(demo_dir, tmp_path):
    """Distillation with the full method (the teacher corrected on the references while it rehearses
    its source domain) on references + pool: corrupting the pool's stored ground truth leaves every
    weight of the student and of the corrected teacher bit-identical."""
    clean = tmp_path / "clean"
    _copy_protocol_files(demo_dir, clean)
    bad = tmp_path / "corrupt"
    corrupted = _copy_with_corrupted_pool(demo_dir, bad, references=6)
    assert corrupted
    teacher = fit(tiny_cfg(demo_dir, tmp_path / "t", mode="teacher", steps_per_epoch=1,
                           train_files=["*_axial_*"])).last_checkpoint
    target = dict(mode="distill", teacher_checkpoint=str(teacher), references=6, unlabelled=True, steps_per_epoch=4,
                  train_files=["*_sagittal_*"], distill=KD.DistillConfig(t_every=1))
    runs = {}
    for name, root in (("clean", clean), ("corrupt", bad)):
        runs[name] = fit(tiny_cfg(root, tmp_path / f"run_{name}", **target))
    assert runs["clean"].config.rehearsal_files == ["*_axial_*"]               # the rehearsal was on
    a, b = state_of(tmp_path / "run_clean" / "last.pt"), state_of(tmp_path / "run_corrupt" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = runs["clean"].teacher.state_dict(), runs["corrupt"].teacher.state_dict()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # ... while the references' ground truth does matter (the test can fail)
    ref_file = next(f for f in sorted((clean / "singlecoil_train").glob("*_sagittal_*.h5")) if f.name not in corrupted)
    with h5py.File(ref_file, "r+") as hf:
        hf["reconstruction_esc"][...] = 0.0
    fit(tiny_cfg(clean, tmp_path / "run_refs", **target))
    c = state_of(tmp_path / "run_refs" / "last.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_the_protocol_teacher_never_saw_the_target_domain(demo_dir):
    """The zoo's protocol teacher was pre-trained on source files only: none of them matches the
    protocol's target or scored patterns."""
    from kdmri_lib import pretrained

    ck = torch.load(pretrained.path("sr4_teacher_source_tiny"), map_location="cpu", weights_only=True)
    files = ck["train_config"]["train_files"]
    assert files == list(P.DEFAULT.source)
    names = [f.name for f in (Path(demo_dir) / "singlecoil_train").glob("*.h5")]
    seen = {n for n in names if any(fnmatch(n, p) for p in files)}
    assert seen and not {n for n in seen if any(fnmatch(n, p) for p in P.DEFAULT.target + P.DEFAULT.val)}
    assert ck["train_config"]["references"] is None and not ck["train_config"]["natural"]


# --------------------------------------------------------------------------------------------
# the terms
# --------------------------------------------------------------------------------------------

class _Pixels(nn.Module):
    """A "model" whose output is a learnable image (the student) or a fixed one (the teacher)."""

    kind = "student"

    def __init__(self, img: torch.Tensor, learn: bool):
        super().__init__()
        self.img = nn.Parameter(img.clone(), requires_grad=learn)

    def forward(self, y, op, return_features=False):
        out = self.img.expand(y.shape[0], *self.img.shape[1:])
        return (out, [out]) if return_features else out


def _toy(B=2, H=8):
    torch.manual_seed(0)
    x = torch.rand(B, 1, H, H)
    T = x + 0.2                       # teacher above the truth everywhere
    S = x + 0.1                       # student between truth and teacher: the dead zone
    y = torch.zeros(B, 1, H // 4, H // 4, dtype=torch.complex64)
    from kdmri_lib.mri.physics import build_operator

    return x, S, T, y, build_operator("sr", 4, (H, H))


def _cfg(**kw):
    base = dict(feature_kd=False, attention_kd=False, edge=False, confidence="none", correction=False, dynamic=False,
                balance="none", teacher_tta=False)
    return KD.DistillConfig(**{**base, **kw})


def test_l1_plus_l1_has_a_dead_zone_and_kd_on_the_pool_removes_it():
    x, S, T, y, op = _toy(B=1)
    student, teacher = _Pixels(S, True), _Pixels(T, False)
    lb = KD.distill_losses(student, teacher, None, y, op, x, _cfg(kd_on="all"))
    g, = torch.autograd.grad(lb.total, [student.img])
    assert float(g.abs().max()) < 1e-9          # sign(S - x) + sign(S - T) = 0 on every pixel
    lb = KD.distill_losses(student, teacher, None, y, op, x, _cfg(kd_on="unlabelled"), labelled=torch.ones(1))
    g, = torch.autograd.grad(lb.total, [student.img])
    assert float(g.abs().min()) > 0             # the truth pulls on every pixel


def test_ground_truth_terms_ignore_unlabelled_samples_and_kd_ignores_labelled_ones():
    x, S, T, y, op = _toy(B=2)
    S = torch.cat([S[:1], S[:1]])                # two identical student outputs
    student, teacher = _Pixels(S[:1], True), _Pixels(T[:1], False)
    lab = torch.tensor([1.0, 0.0])
    cfg = _cfg(kd_on="unlabelled", edge=True, correction=True, t_anchor=0.0)
    lb = KD.distill_losses(student, teacher, None, y, op, torch.cat([x[:1], x[:1]]), cfg, labelled=lab)
    x_bad = torch.cat([x[:1], torch.full_like(x[:1], 1e3)])     # garbage "truth" for the unlabelled sample
    lb2 = KD.distill_losses(student, teacher, None, y, op, x_bad, cfg, labelled=lab)
    assert float(lb.total.detach()) == float(lb2.total.detach()) and lb.student_error == lb2.student_error
    assert float(lb.teacher_total.detach()) == float(lb2.teacher_total.detach())
    # the kd term equals |S - T| of the unlabelled sample alone
    assert float(lb.terms["kd"].detach()) == pytest.approx(float((S[1] - T[0]).abs().mean()), rel=1e-6)
    # a batch of references only: no output distillation at all
    lb3 = KD.distill_losses(student, teacher, None, y, op, torch.cat([x[:1], x[:1]]), cfg, labelled=torch.ones(2))
    g, = torch.autograd.grad(lb3.terms["kd"], [student.img], allow_unused=True)
    assert g is None or float(g.abs().sum()) == 0


def test_uncertainty_weights_need_no_truth_and_favour_agreement():
    spread = torch.rand(2, 1, 8, 8)
    spread[:, :, :4] *= 10                       # the top half: the teacher's augmentations disagree
    w = L.uncertainty_weights(spread)
    assert w.shape == spread.shape and not w.requires_grad
    assert torch.allclose(w.mean(dim=(-2, -1)), torch.ones(2, 1), atol=1e-5)
    assert float(w[:, :, :4].mean()) < float(w[:, :, 4:].mean())


def test_teacher_tta_spread_is_zero_for_a_constant_teacher_and_positive_for_a_real_one(demo_dir):
    from kdmri_lib.models import build_model

    ds = build_dataset(demo_dir, "val", "sr", 4)
    b = torch.utils.data.default_collate([ds[0], ds[5]])
    op = batch_operator(b, "sr", 4)
    const = _Pixels(torch.ones(1, 1, *b["target"].shape[-2:]), False)
    mean, spread = KD.teacher_tta(const, b["y"], op)
    assert float(spread.abs().max()) == 0 and torch.equal(mean, torch.ones_like(mean))
    torch.manual_seed(0)
    t = build_model("teacher", "tiny", "sr", 4)
    mean, spread = KD.teacher_tta(t, b["y"], op)
    assert mean.shape == b["target"].shape and float(spread.mean()) > 0 and not mean.requires_grad


def test_dynamic_floor_keeps_teaching_on():
    assert L.dynamic_weight(0.1, 0.2) == 0.0
    assert L.dynamic_weight(0.1, 0.2, floor=0.5) == 0.5
    assert L.dynamic_weight(0.4, 0.1, floor=0.5) == pytest.approx(0.75)
    st = KD.DistillState(0.0, floor=0.3)
    assert st.update(0.1, 0.5) == 0.3


def test_anchor_penalty_pulls_back_to_the_pretrained_weights():
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    a = torch.tensor([1.0, 1.0])
    pen = L.anchor_penalty([p], [a])
    (g,) = torch.autograd.grad(pen, [p])
    assert float(pen.detach()) == 1.0 and torch.equal(g, torch.tensor([0.0, 2.0]))


def test_gradnorm_balance_sets_each_terms_gradient_to_its_fraction_of_rec(demo_dir):
    from kdmri_lib.models import Adapters, build_model

    torch.manual_seed(0)
    ds = build_dataset(demo_dir, "train", "sr", 4)
    b = torch.utils.data.default_collate([ds[0], ds[40]])
    op = batch_operator(b, "sr", 4)
    s, t = build_model("student", "tiny", "sr", 4), build_model("teacher", "tiny", "sr", 4)
    a = Adapters.for_models(s, t)
    cfg = KD.DistillConfig(kd_on="all", feature_kd=True, attention_kd=True, teacher_tta=False, confidence="none",
                           correction=False, dynamic=False, balance="gradnorm", w_kd=0.5, w_feat=0.1, w_att=0.2)
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg, KD.DistillState())
    params = list(s.parameters()) + list(a.parameters())

    def gnorm(v):
        gs = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g.float() ** 2).sum() for g in gs if g is not None)))

    g_rec = gnorm(lb.terms["rec"])
    for k, w in (("kd", 0.5), ("feat", 0.1), ("att", 0.2)):
        assert gnorm(lb.weights[k] * lb.terms[k]) == pytest.approx(w * g_rec, rel=1e-3), k
