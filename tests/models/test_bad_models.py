"""The bad-input corpus for the models and the checkpoints (truncated, foreign, hostile, another
model): one clear error naming the input, no file changed (``tests/_corpus.py``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _corpus import (  # the corpus's shared helpers
    C64,
    CS,
    IMG,
    SR,
    UNI,
    _good_ckpt,
    assert_unchanged,
    declare,
    noise,
    record,
    snapshot,
)

from kdmri_lib.core.errors import CheckpointError, ConfigError
from kdmri_lib.models import build_model
from kdmri_lib.models.checkpoint import load_checkpoint, load_model
from kdmri_lib.mri import physics

# --------------------------------------------------------------------------------------------
# 3. models: build_model and model(y, op)
# --------------------------------------------------------------------------------------------

def _student():
    return build_model("student", "tiny", "sr", 4)


MODEL_CASES = {
    "kind-unknown": (lambda: build_model("vit"), "kind must be one of"),
    "kind-None": (lambda: build_model(None), "kind must be one of"),
    "preset-unknown": (lambda: build_model("teacher", "huge"), "preset must be one of"),
    "preset-None": (lambda: build_model("student", None), "preset must be one of"),
    "preset-int": (lambda: build_model("unet", 1), "preset must be one of"),
    "task-unknown": (lambda: build_model("student", "tiny", "mri", 4), "task must be one of"),
    "sr-scale-5": (lambda: build_model("student", "tiny", "sr", 5), "sr scale must be one of 2, 3, 4, 8"),
    "sr-scale-string": (lambda: build_model("teacher", "tiny", "sr", "4"), "must be an integer"),
    "cs-acceleration-0": (lambda: build_model("unet", "tiny", "cs", 0), "acceleration .* must be >= 1"),
    "override-unknown": (lambda: build_model("student", "tiny", "sr", 4, depth=3), "unknown student hyper-parameter"),
    "override-string": (lambda: build_model("student", "tiny", "sr", 4, iterations="3"), "iterations must be an integer"),
    "override-zero": (lambda: build_model("student", "tiny", "sr", 4, iterations=0), "iterations must be >= 1"),
    "teacher-embed-not-divisible": (lambda: build_model("teacher", "tiny", "sr", 4, embed_dim=7), "divisible by num_heads"),
    "baseline-with-override": (lambda: build_model("zero_filled", task="cs", factor=4, channels=3), "no hyper-parameters"),
    "bicubic-for-cs": (lambda: build_model("bicubic", task="cs", factor=4), "defined for task 'sr' only"),
    "forward-y-numpy": (lambda: _student()(np.zeros((1, 1, 8, 8), np.complex64), SR()), "complex tensor"),
    "forward-y-image-size": (lambda: _student()(IMG(1, 1, 32, 32, dtype=C64), SR()), r"\(B, 1, 8, 8\)"),
    "forward-y-3d": (lambda: _student()(IMG(1, 8, 8, dtype=C64), SR()), r"\(B, 1, 8, 8\)"),
    "forward-y-empty-batch": (lambda: _student()(IMG(0, 1, 8, 8, dtype=C64), SR()), "empty batch|B >= 1"),
    "forward-op-None": (lambda: _student()(IMG(1, 1, 8, 8, dtype=C64), None), "op must be an operator"),
    "forward-op-other-task": (lambda: _student()(IMG(1, 1, 32, 32, dtype=C64), CS()), "built for task 'sr'"),
    "forward-op-other-scale": (lambda: _student()(IMG(1, 1, 16, 16, dtype=C64), physics.build_operator("sr", 2, (32, 32))),
                               "scale 4"),
    "forward-op-is-a-function": (lambda: _student()(IMG(1, 1, 8, 8, dtype=C64), lambda x: x), "op must be an operator"),
}
declare("models", list(MODEL_CASES))


@pytest.mark.parametrize("case", list(MODEL_CASES), ids=list(MODEL_CASES))
def test_model_bad_input(case):
    thunk, match = MODEL_CASES[case]
    with pytest.raises(ConfigError, match=match):
        thunk()
    record("models", case)


# --------------------------------------------------------------------------------------------
# 4. checkpoints: truncated, foreign, hostile, another model
# --------------------------------------------------------------------------------------------

class _Evil:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for arbitrary code in a pickle."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _EvilSystem:
    def __reduce__(self):
        return (os.system, ("true",))


def _evil_file(p: Path, how: str) -> Path:
    evil = _Evil()
    evil.marker = str(p.parent / "PWNED")
    obj = {"format": "kdmri-checkpoint", "kind": "student", "model_config": {}, "model": {}, "x": evil}
    if how == "system":     # a module torch blocks outright (its message differs); never executed here
        torch.save({**obj, "x": _EvilSystem()}, p)
    elif how == "torch":
        torch.save(obj, p)
    elif how == "pickle":
        p.write_bytes(pickle.dumps(obj, protocol=2))
    else:   # a real checkpoint zip whose data.pkl was swapped for the hostile pickle
        good = _good_ckpt(p.with_name("donor.pt"))
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(p, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename.endswith("data.pkl"):
                    data = pickle.dumps(obj, protocol=2)
                zout.writestr(item, data)
        good.unlink()
    return p


def _zip(p: Path, members: dict) -> Path:
    with zipfile.ZipFile(p, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return p


def _cut(frac: float):
    def make(p: Path) -> Path:
        b = _good_ckpt(p.with_name("full.pt")).read_bytes()
        p.with_name("full.pt").unlink()
        p.write_bytes(b[: int(len(b) * frac)])
        return p
    return make


def _variant(**fields):
    def make(p: Path) -> Path:
        c = dict(load_checkpoint(_good_ckpt(p)))
        for k, v in fields.items():
            if v is KeyError:
                c.pop(k)
            else:
                c[k] = v
        torch.save(c, p)
        return p
    return make


CKPT_CASES = {
    # id: (maker, call, message)
    "missing": (lambda p: p, "load", "checkpoint not found"),
    "is-a-folder": (lambda p: p.mkdir() or p, "load", "is a folder"),
    "zero-bytes": (lambda p: p.write_bytes(b"") or p, "load", "0 bytes.*truncated or corrupt"),
    "truncated-100-bytes": (lambda p: p.write_bytes(_good_ckpt(p).read_bytes()[:100]) and p, "load",
                            "truncated or corrupt"),
    "truncated-to-third": (_cut(1 / 3), "load", "truncated or corrupt"),
    "truncated-to-half": (_cut(0.5), "load", "truncated or corrupt"),
    "truncated-last-byte": (_cut(0.9999), "load", "truncated or corrupt"),
    "text-file": (lambda p: p.write_text("hello\n") and p, "load", "cannot read this checkpoint"),
    "random-bytes": (lambda p: p.write_bytes(noise(5000)) and p, "load", "checkpoint"),
    "zip-without-data": (lambda p: _zip(p, {"archive/x.txt": "x"}), "load", "cannot read this checkpoint"),
    "hostile-torch-save": (lambda p: _evil_file(p, "torch"), "load", "weights_only=True"),
    "hostile-os-system": (lambda p: _evil_file(p, "system"), "load", "weights_only=True"),
    "hostile-plain-pickle": (lambda p: _evil_file(p, "pickle"), "load", "weights_only=True"),
    "hostile-pickle-in-real-zip": (lambda p: _evil_file(p, "zip"), "load", "weights_only=True"),
    "a-list": (lambda p: torch.save([1, 2, 3], p) or p, "load", "not a kdmri checkpoint"),
    "state-dict-only": (lambda p: torch.save(build_model("student").state_dict(), p) or p, "load", "not a kdmri checkpoint"),
    "newer-version": (_variant(version=99), "load", "newer than this kdmri"),
    "no-model-entry": (_variant(model=KeyError), "load", "no 'model' entry"),
    "no-model-config": (_variant(model_config=KeyError), "load", "no 'model_config' entry"),
    "weights-of-another-shape": (_variant(model={"denoiser.head.weight": torch.zeros(1)}), "build", "do not fit"),
    "config-unknown-preset": (_variant(model_config={"kind": "student", "preset": "huge", "task": "sr", "factor": 4}),
                              "build", "do not fit"),
    "expect-another-kind": (_good_ckpt, {"kind": "teacher"}, "holds a student tiny sr x4 model.*differs in kind"),
    "expect-another-preset": (_good_ckpt, {"preset": "paper"}, "differs in preset"),
    "expect-another-task": (_good_ckpt, {"task": "cs", "factor": 4}, "differs in task"),
    "expect-another-factor": (_good_ckpt, {"task": "sr", "factor": 2}, "differs in factor"),
    "teacher-where-student-expected": (lambda p: _good_ckpt(p, kind="teacher"), {"kind": "student"}, "differs in kind"),
    "unet-cs-where-sr-expected": (lambda p: _good_ckpt(p, kind="unet", task="cs"), {"kind": "unet", "task": "sr"},
                                  "differs in task"),
}
# cases that were known defects until checkpoint.load_checkpoint was fixed (kept apart: they pin those fixes)
CKPT_FIXED = {
    "version-not-a-number": (_variant(version="abc"), "load", "version"),
    "model-config-not-a-dict": (_variant(model_config="student"), {"kind": "student"}, "model_config"),
    "random-bytes-called-corrupt": (lambda p: p.write_bytes(noise(5000)) and p, "load", "truncated or corrupt"),
    "random-bytes-seed-17": (lambda p: p.write_bytes(noise(3000, 17)) and p, "load", "truncated or corrupt"),
    "hostile-pickle-names-the-global": (lambda p: _evil_file(p, "system"), "load", r"GLOBAL posix\.system"),
}
CKPT_CASES.update(CKPT_FIXED)
declare("checkpoints", list(CKPT_CASES))


def _ckpt_case(tmp_path, case, maker, call, match):
    d = tmp_path / UNI
    d.mkdir()
    path = maker(d / "ckpt ü.pt")
    before = snapshot(d)
    with pytest.raises(CheckpointError, match=match) as ei:
        if call == "load":
            load_checkpoint(path)
        elif call == "build":
            load_model(path)
        else:
            load_model(path, expect=call)
    assert "ckpt ü.pt" in str(ei.value)
    assert not (d / "PWNED").exists(), "a hostile pickle ran code"
    assert_unchanged(before, snapshot(d))
    record("checkpoints", case)


@pytest.mark.parametrize("case", list(CKPT_CASES), ids=list(CKPT_CASES))
def test_bad_checkpoint(tmp_path, case):
    _ckpt_case(tmp_path, case, *CKPT_CASES[case])



def test_hostile_pickle_would_run_code_without_weights_only(tmp_path):
    """Control for the hostile-checkpoint cases: the file really runs code when unpickled unsafely."""
    p = _evil_file(tmp_path / "evil.pt", "torch")
    torch.load(p, weights_only=False)  # unsafe-ok: the control that shows what weights_only=True prevents
    assert (tmp_path / "PWNED").exists()
