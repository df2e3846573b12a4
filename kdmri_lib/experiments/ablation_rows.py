"""The rows of the distillation ablation (:mod:`kdmri_lib.experiments.ablation`): names, labels, what
each one trains, and the candidate rows outside the default ladder (``--candidates``)."""

from __future__ import annotations

from kdmri_lib.distill import ABLATION_ROWS, CANDIDATE_ROWS

__all__ = ["ROWS", "ROW_NAMES", "DISTILL_ROWS", "CANDIDATE_LABELS", "CANDIDATE_BASE", "WHAT_OF", "LABEL_OF",
           "RUN_ORDER"]

#: (name, label, what) in table order; ``what``: a baseline kind, a training mode, "distill" or "corrected"
ROWS: tuple[tuple[str, str, str], ...] = (
    ("zero_filled", "zero-filled (sinc interpolation)", "baseline"),
    ("lowres", "low-res (nearest neighbour)", "baseline"),
    ("bicubic", "bicubic", "baseline"),
    ("unet", "U-Net (fastMRI), references only", "unet"),
    ("student", "student alone, references only", "student"),
    ("student_matched", "student alone, references only, batch x2 (the distillation rows' student compute)", "student"),
    ("kd_vanilla", "vanilla KD (frozen teacher; L1 output KD on every slice + features)", "distill"),
    ("kd_output", "+ output-space KD on the measurement-only pool only (no dead zone, no adapters)", "distill"),
    ("kd_tta", "+ the teacher's flip-averaged (test-time-augmented) label", "distill"),
    ("kd_uncertainty", "+ its uncertainty as confidence", "distill"),
    ("kd_dynamic", "+ dynamic weight with a floor, gradient-norm balance", "distill"),
    ("full", "kd_tta + teacher correction (head, rehearsing its source domain; full method)", "distill"),
    ("teacher", "teacher (Swin ViT, source domain only)", "teacher"),
    ("teacher_corrected", "teacher after correction (full method's runs)", "corrected"),
)
ROW_NAMES = tuple(r[0] for r in ROWS)
DISTILL_ROWS = tuple(n for n, _, w in ROWS if w == "distill")
#: rows outside the default ladder (``--candidates``; :data:`kdmri_lib.distill.CANDIDATE_ROWS`), with their labels
CANDIDATE_LABELS = {
    "kd_vanilla_fixed": "candidate: vanilla KD at fixed weights (no magnitude balance)",
    "kd_pool": "candidate: vanilla KD on the measurement-only pool only (adapters kept)",
    "kd_prestage": "candidate: kd_tta after KD-MRI's attention-transfer pre-stage (features + attention maps, 400 steps)",
    "full_all": "candidate: full with every teacher parameter corrected",
    "full_anchored": "candidate: the previous full method (kd_dynamic + head correction anchored by L2-SP)",
}
assert set(CANDIDATE_LABELS) == set(CANDIDATE_ROWS), "every candidate row has a label"
#: the row each candidate is compared with (paired per-slice difference in ablation.json / .md)
CANDIDATE_BASE = {"kd_vanilla_fixed": "kd_vanilla", "kd_pool": "kd_vanilla", "kd_prestage": "kd_tta",
                  "full_all": "full", "full_anchored": "full"}
#: what each row is (baseline / teacher / corrected / a training mode) and its table label
WHAT_OF = {**{n: w for n, _, w in ROWS}, **{c: "distill" for c in CANDIDATE_ROWS}}
LABEL_OF = {**{n: lab for n, lab, _ in ROWS}, **CANDIDATE_LABELS}
assert set(DISTILL_ROWS) <= set(ABLATION_ROWS), "every distillation row has its switches in distill.ABLATION_ROWS"
#: training order: the teacher before the distillation rows, the corrected teacher after full
RUN_ORDER = ("zero_filled", "lowres", "bicubic", "teacher", "unet", "student", "student_matched") + DISTILL_ROWS + (
    "teacher_corrected",)
