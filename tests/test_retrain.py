"""scripts/retrain_from_review.py end to end on a tiny reviewed set, with real ONNX models.

The fine-tuning itself needs torch (never in CI); it is replaced by ``--candidate`` or by an
injected ``--train-cmd``. Everything else runs for real: label checks, the hold-out split, the
mixed data set, our evaluation of both models on the domain, OOD and hold-out sets, and the gate.
The bundled model 1.2.0 finds scratches; a constant-output model that never detects anything is
the obviously worse model, so each path's outcome is known.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.synth import SynthConfig, generate, write_image, yolo_label_lines
from inspector.types import Size
from onnx_factory import constant_head_model, head_tensor, write_model
from script_loader import REPO, load_script

retrain = load_script("scripts/retrain_from_review.py")

BUNDLED = REPO / "models" / "scratch-yolov8n.onnx"
REVIEWED = SynthConfig(sizes=((Size(height=480, width=640), 1.0),), p_clean=0.0,
                       min_scratches=1, max_scratches=2, faint_fraction=0.0)


@pytest.fixture
def blind_model(tmp_path: Path) -> Path:
    """A real ONNX detector that never reports anything (its only candidate scores 0)."""
    raw = head_tensor([(320.0, 240.0, 40.0, 20.0, 0.0)])
    return write_model(tmp_path / "blind.onnx", constant_head_model(raw, name="blind"))


@pytest.fixture
def reviewed(tmp_path: Path) -> Path:
    """An export as labelling tools write it: images/ + labels/, plus two bad entries."""
    root = tmp_path / "reviewed"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    paths = []
    for index in range(8):
        sample = generate(880_000, index, REVIEWED)  # a seed no training or test set uses
        image = write_image(sample, root / "images" / f"cam1_{index:03d}")
        (root / "labels" / f"{image.stem}.txt").write_text("\n".join(yolo_label_lines(sample)))
        paths.append(image)
    # the same picture exported twice, a polygon label, an image without any label
    dup = root / "images" / f"cam1_dup{paths[0].suffix}"
    dup.write_bytes(paths[0].read_bytes())
    (root / "labels" / "cam1_dup.txt").write_text((root / "labels" / "cam1_000.txt").read_text())
    (root / "labels" / f"{paths[1].stem}.txt").write_text("0 0.1 0.1 0.2 0.1 0.3 0.3\n")
    write_image(generate(880_000, 99, REVIEWED), root / "images" / "unlabelled")
    return root


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO)


def _run(tmp_path: Path, reviewed: Path, *extra: str) -> tuple[int, dict]:
    work = tmp_path / "work"
    rc = retrain.main([
        "--reviewed", str(reviewed), "--work", str(work), "--holdout-fraction", "0.5",
        "--synthetic-ratio", "1", "--eval-count", "3", "--threads", "1", *extra,
    ])
    report_path = work / "report.json"
    return rc, json.loads(report_path.read_text()) if report_path.exists() else {}


def test_a_better_candidate_is_accepted_and_published(tmp_path, reviewed, blind_model, caplog):
    publish = tmp_path / "publish"
    rc, report = _run(tmp_path, reviewed, "--current", str(blind_model),
                      "--candidate", str(BUNDLED), "--publish-to", str(publish))
    assert rc == 0, report.get("reasons")
    assert report["accepted"] is True and report["reasons"] == []
    assert (publish / "candidate.onnx").read_bytes() == BUNDLED.read_bytes()
    summary = report["summary"]
    assert set(summary["candidate"]) == {"domain", "ood", "holdout"}
    holdout = summary["candidate"]["holdout"]
    assert holdout["images"] == report["reports"]["current"]["holdout"]["images"] > 0
    assert holdout["map50"] > summary["current"]["holdout"]["map50"] == 0.0
    assert "ACCEPTED" in caplog.text

    # the data set: reviewed training images + as many synthetic ones, the hold-out kept apart
    work = tmp_path / "work"
    data = yaml.safe_load((work / "data.yaml").read_text())
    assert data["names"] == {0: "scratch"} and len(data["train"]) == 2
    counts = json.loads((work / "dataset.json").read_text())
    # 10 image files: 1 duplicate, 2 left out
    assert counts["reviewed_train"] + counts["reviewed_holdout"] == 7
    assert counts["synthetic"] == counts["reviewed_train"]
    assert counts["reviewed_holdout"] == holdout["images"]
    train_images = sorted((work / "dataset" / "images" / "train").iterdir())
    assert len(train_images) == counts["reviewed_train"]
    for image in train_images:
        label = work / "dataset" / "labels" / "train" / f"{image.stem}.txt"
        assert label.read_text().strip(), f"{label} lost its boxes"
    # the bad entries are named with their reason, the duplicate is said to be used once
    left_out = "\n".join(report["left_out"])
    assert "unlabelled" in left_out and "no label file" in left_out
    assert "5 fields" in left_out and "polygon" in left_out
    assert "the same image as" in caplog.text and "cam1_dup" in caplog.text


def test_a_worse_candidate_is_refused_with_its_reasons(tmp_path, reviewed, blind_model, caplog):
    publish = tmp_path / "publish"
    rc, report = _run(tmp_path, reviewed, "--current", str(BUNDLED),
                      "--candidate", str(blind_model), "--publish-to", str(publish))
    assert rc == retrain.EXIT_REFUSED == 3
    assert report["accepted"] is False and report["published"] is None
    assert not publish.exists()
    assert any(r.startswith("holdout: map50 0.0000 < current") for r in report["reasons"])
    assert any(r.startswith("holdout: image_recall 0.0000") for r in report["reasons"])
    assert "REFUSED" in caplog.text and "holdout: map50" in caplog.text


def test_the_injected_training_command_makes_the_candidate(tmp_path, reviewed, blind_model):
    # what a training command must do: read {data}, write {out}; here it copies the bundled model
    copy = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import shutil, sys, yaml; yaml.safe_load(open(sys.argv[1])); "
        "shutil.copy(sys.argv[2], sys.argv[3])"
    )
    rc, report = _run(tmp_path, reviewed, "--current", str(blind_model), "--train-cmd",
                      f"{copy} {{data}} {shlex.quote(str(BUNDLED))} {{out}}")
    assert rc == 0 and report["accepted"] is True
    assert (tmp_path / "work" / "candidate.onnx").read_bytes() == BUNDLED.read_bytes()


def test_a_failing_training_command_stops_before_the_gate(tmp_path, reviewed, caplog):
    rc, report = _run(tmp_path, reviewed, "--train-cmd", f"{shlex.quote(sys.executable)} -c "
                      "'raise SystemExit(7)'")
    assert rc == retrain.EXIT_TRAIN_FAILED == 4
    assert report == {}
    assert "training step failed (exit 7)" in caplog.text


def test_no_usable_image_is_bad_input(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (empty / "broken.txt").write_text("")
    rc, _ = _run(tmp_path, empty, "--candidate", str(BUNDLED))
    assert rc == 2
    assert "broken.jpg" in caplog.text and "no usable reviewed images" in caplog.text


def test_a_missing_weights_file_is_refused_up_front(tmp_path, reviewed):
    with pytest.raises(SystemExit) as exc:
        retrain.main(["--reviewed", str(reviewed), "--work", str(tmp_path / "w"),
                      "--current-weights", str(tmp_path / "gone.pt")])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1 0.5 0.5 0.1 0.1", "class 1"),
        ("0 0.5 0.5 0 0.1", "w, h > 0"),
        ("0 1.5 0.5 0.1 0.1", "0..1"),
        ("0 a b c d", "not numbers"),
    ],
)
def test_label_lines_are_checked(tmp_path, text, problem):
    label = tmp_path / "x.txt"
    label.write_text(f"0 0.5 0.5 0.1 0.1\n\n{text}\n")
    with pytest.raises(retrain.LabelError, match=problem) as exc:
        retrain.parse_label(label)
    assert "line 3" in str(exc.value)


def test_labels_are_found_under_labels_or_beside_the_image(tmp_path):
    nested = tmp_path / "export" / "images" / "train" / "a.jpg"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"")
    assert retrain.label_path(nested) is None
    beside = nested.with_suffix(".txt")
    beside.write_text("")
    assert retrain.label_path(nested) == beside
    under = tmp_path / "export" / "labels" / "train" / "a.txt"
    under.parent.mkdir(parents=True)
    under.write_text("")
    assert retrain.label_path(nested) == under


def test_holdout_split_is_stable_by_name():
    items = [retrain.Reviewed(Path(f"/x/img_{i}.jpg"), Path("/x/l.txt"), [], str(i))
             for i in range(400)]
    held = [retrain.in_holdout(item, 0.2) for item in items]
    assert 0.12 < np.mean(held) < 0.28
    moved = [retrain.Reviewed(Path(f"/elsewhere/img_{i}.jpg"), Path("/y.txt"), [], "z")
             for i in range(400)]
    assert [retrain.in_holdout(item, 0.2) for item in moved] == held
