"""The shipped pretrained zoo: every card is true (hash, fields, metrics re-measured), damaged files
are clear errors, and ``pretrained:NAME`` works wherever a checkpoint path does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kdmri_lib import pretrained as P
from kdmri_lib.core.errors import CheckpointError

#: what notebooks 03-05 and the ablation rely on
REQUIRED = ("sr4_teacher_tiny", "sr4_student_tiny", "sr4_unet_tiny", "sr4_teacher_source_tiny")
CARD_FIELDS = ("name", "file", "sha256", "kind", "preset", "task", "factor", "metrics", "data", "command", "steps",
               "seconds", "seed", "torch", "train_files")


def _entries():
    return P.manifest()["models"]


def test_zoo_holds_the_required_models_within_its_size_limit():
    from kdmri_lib.pretrained.build import MAX_BYTES, ZOO

    names = P.names()
    assert set(REQUIRED) <= set(names), names
    assert set(names) <= set(ZOO), "every shipped model can be rebuilt by make pretrained"
    files = [P.ZOO_DIR / e["file"] for e in _entries()]
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e["name"])
def test_every_card_is_true(entry, demo_dir):
    """Fields present, file hash equal to the card's, the data it was made on is this demo build, and
    its metrics on the demo validation slices re-measured equal the card's (within 0.05 dB)."""
    from kdmri_lib.engine.reconstruct import evaluate
    from kdmri_lib.pretrained.build import command_for, data_identity

    for k in CARD_FIELDS:
        assert k in entry, k
    assert P.sha256_file(P.ZOO_DIR / entry["file"]) == entry["sha256"]
    assert entry["data"]["digest"] == data_identity(demo_dir)["digest"]
    assert entry["command"].startswith("python -m kdmri_lib.pretrained.build") and entry["name"] in entry["command"]
    assert entry["command"] == command_for(entry["name"], "data/demo")
    model, card = P.load(entry["name"])
    assert (model.kind, model.preset, model.task, model.factor) == (card["kind"], card["preset"], card["task"],
                                                                   card["factor"])
    res = evaluate(model, demo_dir, "val", per_slice=False)
    assert res["means"]["PSNR"] == pytest.approx(card["metrics"]["PSNR"], abs=0.05)
    assert res["means"]["SSIM"] == pytest.approx(card["metrics"]["SSIM"], abs=5e-4)
    assert res["slices"] == card["metrics"]["slices"]
    # what it was trained on is what its checkpoint's training configuration says
    ck = torch.load(P.ZOO_DIR / entry["file"], map_location="cpu", weights_only=True)
    assert entry["train_files"] == ck["train_config"].get("train_files")


@pytest.fixture()
def zoo_copy(tmp_path) -> Path:
    dst = tmp_path / "zoo ü"
    shutil.copytree(P.ZOO_DIR, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst / "manifest.json"


def test_tampered_truncated_and_missing_files_are_clear_errors(zoo_copy):
    name = REQUIRED[1]
    card = P.card(name, zoo_copy)
    f = zoo_copy.parent / card["file"]
    P.load(name, manifest_path=zoo_copy)        # the intact copy loads
    raw = f.read_bytes()
    # tampered: one byte changed in the middle
    f.write_bytes(raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 1]) + raw[len(raw) // 2 + 1:])
    with pytest.raises(CheckpointError) as e:
        P.load(name, manifest_path=zoo_copy)
    msg = str(e.value)
    assert str(f) in msg and card["sha256"] in msg and P.sha256_file(f) in msg and "expected" in msg
    # truncated
    f.write_bytes(raw[:1000])
    with pytest.raises(CheckpointError, match=f"expected sha256 {card['sha256']}, got {P.sha256_file(f)}"):
        P.load(name, manifest_path=zoo_copy)
    # missing
    f.unlink()
    with pytest.raises(CheckpointError, match=r"is missing \(expected sha256 " + card["sha256"]):
        P.load(name, manifest_path=zoo_copy)
    # unknown name, unreadable manifest
    with pytest.raises(CheckpointError, match="'nope' is not in the zoo.*available: sr4"):
        P.load("nope", manifest_path=zoo_copy)
    zoo_copy.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable zoo manifest"):
        P.load(name, manifest_path=zoo_copy)


def test_the_hash_is_checked_before_the_file_is_unpickled(zoo_copy, monkeypatch):
    name = REQUIRED[1]
    f = zoo_copy.parent / P.card(name, zoo_copy)["file"]
    f.write_bytes(f.read_bytes() + b"\0")
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or {})
    with pytest.raises(CheckpointError, match="does not match its card"):
        P.load(name, manifest_path=zoo_copy)
    assert not calls


def test_pretrained_name_works_in_the_reconstruction_cli_and_load_model(demo_dir, tmp_path, capsys):
    from kdmri_lib.engine.reconstruct import main
    from kdmri_lib.models.checkpoint import load_model

    name = REQUIRED[1]
    model, _ = load_model(f"pretrained:{name}")
    assert model.kind == "student"
    code = main(["--checkpoint", f"pretrained:{name}", "--data", str(demo_dir), "--out", str(tmp_path / "r"),
                 "--evaluate", "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "fastMRI evaluate" in out
    psnr = float(out.split("PSNR")[1].split()[0])
    assert psnr == pytest.approx(P.card(name)["metrics"]["PSNR"], abs=0.05)
    code = main(["--checkpoint", "pretrained:nope", "--data", str(demo_dir), "--out", str(tmp_path / "r2")])
    assert code == 2 and "not in the zoo" in capsys.readouterr().err


def test_a_run_can_name_a_zoo_teacher():
    from kdmri_lib.core.errors import CheckpointError as CE
    from kdmri_lib.engine.train import TrainConfig

    cfg = TrainConfig(mode="distill", teacher_checkpoint=f"pretrained:{REQUIRED[0]}", data_dir="data/demo")
    cfg.validate(check_paths=False)
    with pytest.raises(CE, match="not in the zoo"):
        TrainConfig(mode="distill", teacher_checkpoint="pretrained:nope").validate()


def test_manifest_is_valid_json_with_a_format(tmp_path):
    m = json.loads(P.MANIFEST.read_text())
    assert m["format"] == "kdmri-pretrained" and isinstance(m["models"], list)
    assert P.manifest(tmp_path / "none.json") == {"models": []}


def test_readme_results_table_is_the_generated_one(repo_root):
    """The README's headline table is `python -m kdmri_lib.pretrained --markdown` of the shipped zoo."""
    text = (repo_root / "README.md").read_text()
    assert P.readme_block(text) == P.markdown_table()
    # ... and its distillation summary is the shipped ablation's
    assert P.readme_block(text, P.ABLATION_START, P.ABLATION_END) == P.ablation_summary()
    assert "sr4_zero_filled (baseline)" in P.markdown_table()


def test_a_candidate_builds_into_its_own_zoo_never_the_shipped_one(demo_dir, tmp_path, monkeypatch, capsys):
    """``--only CANDIDATE`` trains, scores and writes a card into the candidates' zoo (its own
    manifest); the shipped manifest does not change, and mixing the two kinds is refused."""
    from kdmri_lib.pretrained import build as B

    monkeypatch.setitem(B.CANDIDATES, "sr4_student_probe", {"mode": "student", "preset": "tiny", "task": "sr", "factor": 4,
                                                            "epochs": 1, "steps_per_epoch": 2, "natural": True})
    monkeypatch.setattr(B, "CANDIDATE_ZOO", tmp_path / "candidates")
    before = P.MANIFEST.read_bytes()
    assert B.main(["--data", str(demo_dir), "--work", str(tmp_path / "work"), "--only", "sr4_student_probe",
                   "--no-progress"]) == 0
    assert P.MANIFEST.read_bytes() == before
    (card,) = P.manifest(tmp_path / "candidates" / "manifest.json")["models"]
    assert card["name"] == "sr4_student_probe" and card["natural"] is True and card["steps"] == 2
    assert P.sha256_file(tmp_path / "candidates" / card["file"]) == card["sha256"]
    assert "natural images 1:1" in P.markdown_table(tmp_path / "candidates" / "manifest.json")
    assert B.main(["--only", "sr4_student_probe,sr4_student_tiny"]) == 2
    assert "mixes shipped entries and candidates" in capsys.readouterr().err
    assert B.main(["--only", "sr4_nothing"]) == 2
    assert "candidates: sr4_teacher_small_natural" in capsys.readouterr().err


def test_the_docs_margin_table_is_the_generated_one(repo_root):
    """docs/training.md's teacher-margin table is :func:`kd.pretrained.margin_table` of the cards
    (the shipped zoo and the candidates' cards), so every difference it quotes is the cards'."""
    text = (repo_root / "docs" / "training.md").read_text()
    assert P.readme_block(text, P.MARGIN_START, P.MARGIN_END) == P.margin_table()
    assert P.CANDIDATE_CARDS.is_file()
    from kdmri_lib.pretrained.build import CANDIDATES

    assert {e["name"] for e in P.manifest(P.CANDIDATE_CARDS)["models"]} <= set(CANDIDATES)


def test_the_docs_cs_figures_are_the_candidates_cards(repo_root):
    """docs/training.md's cs x4 sentence quotes the stored candidates' cards."""
    import re

    text = " ".join((repo_root / "docs" / "training.md").read_text().split())
    m = re.search(r"zero-filling (\d+\.\d+) / (\d+\.\d+) dB, the student alone (\d+\.\d+) / (\d+\.\d+), "
                  r"the U-Net (\d+\.\d+) / (\d+\.\d+), below zero-filling on the real scan", text)
    assert m, "docs/training.md: the cs x4 sentence is missing"
    cards = P.manifest(P.CANDIDATE_CARDS)
    zf = cards["baselines"]["cs4_zero_filled"]
    by = {e["name"]: e for e in cards["models"]}
    want = [zf["val"]["PSNR"], zf["heldout"]["PSNR"]]
    for name in ("cs4_student_tiny", "cs4_unet_tiny"):
        want += [by[name]["metrics"]["PSNR"], by[name]["heldout"]["PSNR"]]
    assert [float(v) for v in m.groups()] == pytest.approx([round(w, 2) for w in want], abs=0.006)
    assert by["cs4_unet_tiny"]["heldout"]["PSNR"] < zf["heldout"]["PSNR"]
    m = re.search(r"tiny `cs` teacher \(`cs4_teacher_tiny`, (\d+) steps\) is the other way round: (\d+\.\d+) / "
                  r"(\d+\.\d+) dB, (\d+\.\d+) dB below the student alone on the validation slices and (\d+\.\d+) dB "
                  r"above it on the held-out scan, the only model here more than 0.7 dB above its student there", text)
    assert m, "docs/training.md: the cs teacher's sentence is missing"
    t, s = by["cs4_teacher_tiny"], by["cs4_student_tiny"]
    assert int(m.group(1)) == t["steps"]
    assert [float(v) for v in m.groups()[1:]] == pytest.approx(
        [round(t["metrics"]["PSNR"], 2), round(t["heldout"]["PSNR"], 2),
         round(s["metrics"]["PSNR"] - t["metrics"]["PSNR"], 2), round(t["heldout"]["PSNR"] - s["heldout"]["PSNR"], 2)],
        abs=0.006)
    # "the only model here": every card of either task against the student alone of its task
    students = {"cs": s, "sr": P.card("sr4_student_tiny")}
    above = [e["name"] for e in P.manifest()["models"] + cards["models"]
             if e["heldout"]["PSNR"] - students[e["task"]]["heldout"]["PSNR"] > 0.7]
    assert above == ["cs4_teacher_tiny"]


def test_the_docs_augmentation_sentence_is_the_cards(repo_root):
    """docs/training.md's random-warp paragraph: the ranges are the module's, the PSNRs the cards'."""
    import re

    from kdmri_lib.datasets import augment as A

    text = " ".join((repo_root / "docs" / "training.md").read_text().split())
    m = re.search(r"rotated \(up to (\d+) degrees\), scaled \((\d\.\d+) to (\d\.\d+)\) and shifted \(up to (\d+) % "
                  r"of the field of view\)", text)
    assert m and [float(v) for v in m.groups()] == pytest.approx([A.ROTATION_DEG, *A.SCALE, 100 * A.SHIFT])
    by = {e["name"]: e for e in P.manifest(P.CANDIDATE_CARDS)["models"]}
    ta, t = by["sr4_teacher_small_augment"], P.card("sr4_teacher_small")
    sa, s = by["sr4_student_tiny_augment"], P.card("sr4_student_tiny")
    assert ta["augment"] and sa["augment"] and not t.get("augment")
    m = re.search(r"does not change the teacher: (\d+\.\d+) dB on the validation slices and (\d+\.\d+) on the "
                  r"held-out scan against (\d+\.\d+) and (\d+\.\d+) without", text)
    assert m and [float(v) for v in m.groups()] == pytest.approx(
        [round(v, 2) for v in (ta["metrics"]["PSNR"], ta["heldout"]["PSNR"], t["metrics"]["PSNR"], t["heldout"]["PSNR"])],
        abs=0.006)
    m = re.search(r"The student gains (\d+\.\d+) dB on the held-out scan \((\d+\.\d+) against (\d+\.\d+)\) and "
                  r"loses (\d+\.\d+) dB on the validation slices", text)
    assert m and [float(v) for v in m.groups()] == pytest.approx(
        [round(sa["heldout"]["PSNR"] - s["heldout"]["PSNR"], 2), round(sa["heldout"]["PSNR"], 2),
         round(s["heldout"]["PSNR"], 2), round(s["metrics"]["PSNR"] - sa["metrics"]["PSNR"], 2)], abs=0.006)


def test_the_docs_margin_sentences_are_the_cards(repo_root):
    """The learning curve and the differences docs/training.md states beside the margin table."""
    import re

    text = " ".join((repo_root / "docs" / "training.md").read_text().split())
    small, nat = P.card("sr4_teacher_small"), P.manifest(P.CANDIDATE_CARDS)["models"]
    nat = next(e for e in nat if e["name"] == "sr4_teacher_small_natural")
    m = re.search(r"4000 steps at its plateau: ((?:\d+\.\d+, )+\d+\.\d+) dB every 500 steps\), leads by (\d+\.\d+) dB", text)
    assert m, "docs/training.md: the teacher's curve sentence is missing"
    assert [float(v) for v in m.group(1).split(", ")] == [round(p, 2) for _, p in small["curve"]]
    assert float(m.group(2)) == round(small["metrics"]["PSNR"] - P.card("sr4_student_tiny")["metrics"]["PSNR"], 2)
    m = re.search(r"the teacher loses (\d+\.\d+) dB on the validation slices and gains (\d+\.\d+) on the held-out", text)
    assert m and float(m.group(1)) == round(small["metrics"]["PSNR"] - nat["metrics"]["PSNR"], 2)
    assert float(m.group(2)) == round(nat["heldout"]["PSNR"] - small["heldout"]["PSNR"], 2)
