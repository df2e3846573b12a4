"""Corrective distillation: every term teaches the student, the released KL cannot, the teacher is
frozen or corrected (only by its own optimiser), confidence and dynamic weights behave as documented."""

from __future__ import annotations

import pytest
import torch
from _train_utils import tiny_cfg

from kdmri_lib import distill as KD
from kdmri_lib.core.errors import ConfigError
from kdmri_lib.datasets.data import batch_operator, build_dataset
from kdmri_lib.engine.train import fit
from kdmri_lib.models import Adapters, build_model, pairing
from kdmri_lib.models.checkpoint import load_model


@pytest.fixture(scope="module")
def batch(demo_dir):
    torch.manual_seed(0)
    ds = build_dataset(demo_dir, "train", "sr", 4)
    b = torch.utils.data.default_collate([ds[i] for i in (0, 40)])
    return b, batch_operator(b, "sr", 4)


@pytest.fixture()
def models():
    torch.manual_seed(0)
    s = build_model("student", "tiny", "sr", 4)
    t = build_model("teacher", "tiny", "sr", 4)
    return s, t, Adapters.for_models(s, t)


#: feature and attention-map distillation switched on (the full method transfers in output space only)
FEATURES = dict(feature_kd=True, attention_kd=True)


def _grad_norm(loss, module):
    gs = torch.autograd.grad(loss, [p for p in module.parameters()], retain_graph=True, allow_unused=True)
    return sum(float(g.abs().sum()) for g in gs if g is not None)


@pytest.mark.parametrize("term", ["rec", "edge", "kd", "feat", "att"])
def test_each_term_has_a_nonzero_gradient_wrt_the_student(batch, models, term):
    b, op = batch
    s, t, a = models
    cfg = KD.DistillConfig(confidence="soft", kd_on="all", teacher_tta=False, edge=True, **FEATURES)
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg)
    assert lb.terms[term].requires_grad
    assert lb.weights[term] > 0
    assert _grad_norm(lb.terms[term], s) > 0
    if term == "feat":
        assert _grad_norm(lb.terms[term], a) > 0
    # no student term reaches the teacher
    assert _grad_norm(lb.terms[term], t) == 0


def test_released_one_channel_kl_is_exactly_zero_with_zero_gradient(batch, models):
    """Teaching test: the released CHPNet 'distillation' term over a one-channel image."""
    b, op = batch
    s, t, a = models
    S = s(b["y"], op)
    kl = KD.L.released_kl_term(S, t(b["y"], op).detach())
    assert kl.item() == 0.0
    assert _grad_norm(kl, s) == 0.0
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"])
    assert lb.terms["kl"].item() == 0.0 and lb.log_dict()["kl"] == 0.0


def test_breakdown_contents_and_no_grad(batch, models):
    b, op = batch
    s, t, a = models
    cfg = KD.DistillConfig(kd_on="all", edge=True, **FEATURES)   # every sample labelled: KD on all of them
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg, teacher_grad=True)
    for k in ("confidence", "student", "teacher", "student_error", "teacher_error"):
        assert lb.maps[k].shape == b["target"].shape and not lb.maps[k].requires_grad
    assert set(lb.terms) >= {"rec", "edge", "kd", "feat", "att", "kl"}
    assert lb.teacher_total is not None and lb.teacher_total.requires_grad
    assert set(lb.teacher_terms) == {"rec", "edge", "feedback", "w_feedback", "wrong_fraction"}
    assert torch.isclose(lb.total, sum(lb.weights[k] * lb.terms[k] for k in KD.STUDENT_TERMS))
    norms = KD.gradient_norms(lb, s)
    assert all(norms[k] > 0 for k in KD.STUDENT_TERMS)
    # the notebook widget: same call under no_grad, switches off
    with torch.no_grad():
        lb2 = KD.distill_losses(s, t, a, b["y"], op, b["target"],
                                KD.DistillConfig(edge=False, output_kd=False, correction=False, dynamic=False))
    assert lb2.weights["edge"] == 0 and lb2.weights["kd"] == 0 and lb2.teacher_total is None
    assert not lb2.total.requires_grad and lb2.dynamic == 1.0


def test_confidence_map_is_zero_where_the_teacher_is_worse(batch, models):
    b, op = batch
    s, t, a = models
    for mode in ("hard", "soft"):
        lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], KD.DistillConfig(confidence=mode, teacher_tta=False))
        w, es, et = lb.maps["confidence"], lb.maps["student_error"], lb.maps["teacher_error"]
        worse = et >= es
        assert worse.any() and (~worse).any()
        assert (w[worse] == 0).all() and (w[~worse] > 0).all()
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], KD.DistillConfig(confidence="none", teacher_tta=False))
    assert (lb.maps["confidence"] == 1).all()


def test_dynamic_weight_follows_the_error_ratio(batch, models):
    st = KD.DistillState(ema_decay=0.0)
    lags = [st.update(e, 0.1) for e in (0.4, 0.2, 0.12, 0.1, 0.05)]
    assert lags[0] > lags[1] > lags[2] > 0 and lags[3] == 0.0 and lags[4] == 0.0   # less teaching as the student catches up
    b, op = batch
    s, t, a = models
    cfg = KD.DistillConfig(dynamic=True, ema_decay=0.5, balance=False, **FEATURES)
    state = KD.DistillState(cfg.ema_decay)
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg, state)
    assert 0 <= lb.dynamic <= 1
    for k in ("kd", "feat", "att"):
        assert lb.weights[k] == pytest.approx(getattr(cfg, f"w_{k}") * lb.dynamic)
    assert lb.weights["rec"] == cfg.w_rec          # never scaled
    sd = state.state_dict()
    st2 = KD.DistillState()
    st2.load_state_dict(sd)
    assert st2.state_dict() == sd and st2.factor == state.factor


def test_balance_scales_feature_terms_to_a_fraction_of_the_l1_loss(batch, models):
    b, op = batch
    s, t, a = models
    cfg = KD.DistillConfig(dynamic=False, w_feat=0.1, w_att=0.2, t_feedback_weight=0.05, balance="magnitude", **FEATURES)
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg, teacher_grad=True)
    rec = float(lb.terms["rec"].detach())
    for k, w in (("feat", 0.1), ("att", 0.2)):
        # a fresh state: the running magnitudes are this batch's values
        assert lb.weights[k] * float(lb.terms[k].detach()) == pytest.approx(w * rec, rel=1e-5)
    assert lb.teacher_terms["w_feedback"] * lb.teacher_terms["feedback"] == pytest.approx(0.05 * lb.teacher_terms["rec"], rel=1e-5)
    unbalanced = KD.distill_losses(s, t, a, b["y"], op, b["target"], KD.DistillConfig(dynamic=False, balance=False, **FEATURES))
    assert unbalanced.weights["feat"] == KD.DistillConfig().w_feat
    # the factor carries no gradient: the feature gradient is the term's, scaled
    g_bal = KD.gradient_norms(lb, s)["feat"]
    ratio = lb.weights["feat"] / unbalanced.weights["feat"]
    assert g_bal == pytest.approx(KD.gradient_norms(unbalanced, s)["feat"] * ratio, rel=1e-4)


def test_warmup_ramps_the_distillation_weights(batch, models):
    b, op = batch
    s, t, a = models
    cfg = KD.DistillConfig(dynamic=False, kd_warmup_steps=4)
    state = KD.DistillState()
    ramps = [KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg, state).warmup for _ in range(5)]
    assert ramps == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_teacher_changes_only_through_its_own_optimiser(batch, models):
    b, op = batch
    s, t, a = models
    opt_s = torch.optim.AdamW(list(s.parameters()) + list(a.parameters()), lr=1e-2)
    opt_t = torch.optim.AdamW(t.parameters(), lr=1e-2)
    assert not {id(p) for p in t.parameters()} & {id(p) for g in opt_s.param_groups for p in g["params"]}
    t0 = {k: v.clone() for k, v in t.state_dict().items()}
    s0 = {k: v.clone() for k, v in s.state_dict().items()}
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], KD.DistillConfig(), teacher_grad=True)
    (lb.total + lb.teacher_total).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.parameters())
    opt_s.step()
    assert all(torch.equal(t0[k], v) for k, v in t.state_dict().items())            # student step: teacher intact
    assert any(not torch.equal(s0[k], v) for k, v in s.state_dict().items())
    opt_t.step()
    assert any(not torch.equal(t0[k], v) for k, v in t.state_dict().items())        # teacher step: teacher moves
    # the teacher's loss does not reach the student
    lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], KD.DistillConfig(), teacher_grad=True)
    assert _grad_norm(lb.teacher_total, s) == 0 and _grad_norm(lb.teacher_total, a) == 0


@pytest.fixture(scope="module")
def teacher_ckpt(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return fit(tiny_cfg(demo_dir, out, mode="teacher", steps_per_epoch=2)).last_checkpoint


def test_frozen_teacher_never_changes_in_training(demo_dir, tmp_path, teacher_ckpt):
    res = fit(tiny_cfg(demo_dir, tmp_path, mode="distill", teacher_checkpoint=str(teacher_ckpt),
                       distill=KD.DistillConfig.preset("kd_vanilla")))
    before, _ = load_model(teacher_ckpt)
    assert all(torch.equal(v, res.teacher.state_dict()[k]) for k, v in before.state_dict().items())
    assert all(not p.requires_grad for p in res.teacher.parameters())
    assert not (tmp_path / "teacher_last.pt").exists()
    assert res.history[-1]["w_kd"] > 0 and "t_loss" not in res.history[-1]


def test_corrected_teacher_learns_and_is_saved(demo_dir, tmp_path, teacher_ckpt):
    res = fit(tiny_cfg(demo_dir, tmp_path, mode="distill", teacher_checkpoint=str(teacher_ckpt),
                       distill=KD.DistillConfig(teacher_lr=1e-3, t_params="all", t_every=1, **FEATURES)))
    before, _ = load_model(teacher_ckpt)
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, res.teacher.state_dict()[k])]
    assert changed
    t2, ck = load_model(tmp_path / "teacher_last.pt", expect={"kind": "teacher", "task": "sr", "factor": 4})
    assert all(torch.equal(v, res.teacher.state_dict()[k]) for k, v in t2.state_dict().items())
    h = res.history[-1]
    assert {"t_loss", "t_rec", "t_feedback", "t_lr", "teacher_val_PSNR"} <= set(h) | {"t_lr"}
    assert "teacher_val_PSNR" in h
    rows = (tmp_path / "steps.csv").read_text().splitlines()
    header = rows[0].split(",")
    for col in ("loss", "rec", "edge", "kd", "feat", "att", "kl", "w_kd", "w_feat", "w_att", "dynamic", "lr", "t_lr",
                "t_loss", "grad_norm", "t_grad_norm"):
        assert col in header
    assert len(rows) == 1 + 3


def test_pairing_rule_and_adapter_shapes():
    assert pairing(2, 2) == [0, 1]
    assert pairing(6, 3) == [0, 0, 1, 1, 2, 2]
    assert pairing(2, 3) == [1, 2]
    assert pairing(1, 4) == [3]
    assert pairing(4, 1) == [0, 0, 0, 0]
    for task, factor in (("sr", 4), ("cs", 4)):
        s = build_model("student", "tiny", task, factor)
        t = build_model("teacher", "tiny", task, factor)
        a = Adapters.for_models(s, t)
        fs = [torch.randn(2, c, 6 * 2 ** i, 6 * 2 ** i) for i, c in enumerate(s.feature_channels)]
        sizes = [(24, 24)] * len(t.feature_channels)
        out = a(fs, sizes)
        assert [tuple(o.shape) for o in out] == [(2, c, 24, 24) for c in t.feature_channels]
    with pytest.raises(ConfigError):
        a(fs[:1], sizes)


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="confidence"):
        KD.DistillConfig(confidence="sometimes")
    with pytest.raises(ConfigError, match="w_kd"):
        KD.DistillConfig(w_kd=-1)
    with pytest.raises(ConfigError, match="ema_decay"):
        KD.DistillConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="edge"):
        KD.DistillConfig(edge="yes")
    with pytest.raises(ConfigError, match="unknown"):
        KD.DistillConfig.from_dict({"output": True})
    v = KD.DistillConfig.preset("kd_vanilla")
    assert (v.output_kd, v.feature_kd, v.confidence, v.edge, v.correction, v.dynamic) == (True, True, "none", False, False, False)
    names = list(KD.ABLATION_ROWS)
    assert names == ["kd_vanilla", "kd_output", "kd_tta", "kd_uncertainty", "kd_dynamic", "full"]
    # each row switches on exactly its declared piece on top of its base (an earlier row)
    assert set(KD.ABLATION_BASE) == set(names[1:]) == set(KD.ABLATION_PIECES)
    for row, base in KD.ABLATION_BASE.items():
        assert names.index(base) < names.index(row)
        a, b = KD.DistillConfig.preset(row).to_dict(), KD.DistillConfig.preset(base).to_dict()
        assert {k for k in a if a[k] != b[k]} == set(KD.ABLATION_PIECES[row]), row
    # every row pins the fields whose defaults are the full method's, so changing a default cannot
    # silently change an earlier row (the ablation reuses finished runs with the same settings)
    for row in names[:-1]:
        assert {"confidence", "dynamic", "balance", "teacher_lr", "t_anchor", "t_rehearsal"} <= set(KD.ABLATION_ROWS[row])
    full = KD.DistillConfig.preset("full")
    assert full.to_dict() == {**KD.DistillConfig().to_dict()}
    assert KD.DistillConfig.from_dict(full.to_dict()) == full


def test_prestage_trains_on_feature_and_attention_terms_then_switches(batch, models):
    """KD-MRI's pre-stage: during its steps only feat/att weigh (and carry the student's gradient); after it
    they weigh 0 and rec / kd take over. A pre-stage without those terms is refused."""
    b, op = batch
    s, t, a = models
    cfg = KD.DistillConfig(kd_on="all", teacher_tta=False, correction=False, prestage_steps=2, **FEATURES)
    state = KD.DistillState()
    seen = []
    for _ in range(3):
        lb = KD.distill_losses(s, t, a, b["y"], op, b["target"], cfg, state)
        seen.append({k: lb.weights[k] > 0 for k in ("rec", "kd", "feat", "att")})
        assert lb.total.requires_grad and _grad_norm(lb.total, s) > 0
    pre = {"rec": False, "kd": False, "feat": True, "att": True}
    assert seen == [pre, pre, {"rec": True, "kd": True, "feat": False, "att": False}]
    with pytest.raises(ConfigError, match="prestage_steps > 0 .* needs feature_kd or attention_kd"):
        KD.DistillConfig(prestage_steps=5)
    assert KD.DistillConfig.preset("kd_prestage").prestage_steps == 400
