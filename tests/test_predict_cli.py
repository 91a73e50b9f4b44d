"""``inspector predict`` end to end through the CLI, on a tiny real ONNX model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from inspector.cli import main
from inspector.models import MODELS_DIR_ENV
from inspector.result import load_schema


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_wide.jpg"), np.full((960, 1280, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "b_tall.png"), np.full((1280, 960, 3), 90, np.uint8))
    (folder / "notes.txt").write_text("not an image, and not picked up")
    return folder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lines_with_boxes_in_source_pixels(capsys, images, tiny_model_path):
    code, out, err = run_cli(capsys, str(images), "--model", str(tiny_model_path), "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    validator = jsonschema.Draft202012Validator(load_schema())
    for result in results:
        validator.validate(result)
    assert [r["image"]["name"] for r in results] == ["a_wide.jpg", "b_tall.png"]
    assert [r["detections"][0]["box"] for r in results] == [
        [600.0, 300.0, 680.0, 340.0],
        [440.0, 460.0, 520.0, 500.0],
    ]
    assert {r["verdict"] for r in results} == {"defect"}


def test_bad_images_are_reported_and_the_rest_inspected(capsys, tmp_path, images, tiny_model_path):
    text = tmp_path / "fake.jpg"
    text.write_text("hello")
    missing = tmp_path / "gone.png"
    code, out, err = run_cli(
        capsys,
        str(text),
        str(images / "a_wide.jpg"),
        str(missing),
        "--model",
        str(tiny_model_path),
        "--json",
    )
    assert code == 1
    assert len(out.splitlines()) == 1
    lines = err.splitlines()
    assert any(str(text) in line and "not an image" in line for line in lines)
    assert any(str(missing) in line and "not found" in line for line in lines)


def test_human_output_and_thresholds(capsys, images, tiny_model_path):
    code, out, _ = run_cli(
        capsys, str(images / "a_wide.jpg"), "--model", str(tiny_model_path), "--conf", "0.95"
    )
    assert code == 0
    assert out.startswith("a_wide.jpg 1280x960: pass, 0 detection(s)")
    code, out, _ = run_cli(
        capsys, str(images / "a_wide.jpg"), "--model", str(tiny_model_path), "--iou", "0.95"
    )
    assert "defect, 2 detection(s): scratch 0.90 [600.0, 300.0, 680.0, 340.0]" in out


def test_save_writes_annotated_copies(capsys, tmp_path, images, tiny_model_path):
    saved = tmp_path / "annotated"
    code, _, err = run_cli(
        capsys, str(images), "--model", str(tiny_model_path), "--save", str(saved), "--threads", "1"
    )
    assert code == 0, err
    assert sorted(p.name for p in saved.iterdir()) == ["a_wide.jpg", "b_tall.png"]
    drawn = cv2.imread(str(saved / "b_tall.png"))
    assert drawn.shape == (1280, 960, 3)
    # the box edge x = 440 (portrait image, source pixels) is drawn in red
    b, g, r = drawn[480, 440].tolist()
    assert r > 200 and g < 80 and b < 80
    assert (drawn[100, 100] == 90).all()  # away from the box, untouched


def test_without_a_bundled_model_it_says_to_pass_model(capsys, monkeypatch, tmp_path, images):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "no-models-here"))
    code, out, err = run_cli(capsys, str(images))
    assert code == 2
    assert "no bundled model yet" in err and "--model" in err
    assert out == ""


def test_bad_model_and_bad_provider(capsys, tmp_path, images, tiny_model_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    code, _, err = run_cli(capsys, str(images), "--model", str(bad))
    assert code == 2
    assert str(bad) in err and "not a valid ONNX model" in err
    code, _, err = run_cli(
        capsys, str(images), "--model", str(tiny_model_path), "--providers", "MadeUpProvider"
    )
    assert code == 2
    assert "MadeUpProvider" in err and "CPUExecutionProvider" in err


@pytest.mark.parametrize("option", [["--conf", "1.5"], ["--iou", "-1"], ["--conf", "x"]])
def test_threshold_arguments_are_checked(capsys, images, option):
    with pytest.raises(SystemExit) as caught:
        main(["predict", str(images), *option])
    assert caught.value.code == 2


def test_stdout_is_pure_json_in_a_real_process(images, tiny_model_path):
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "inspector",
            "predict",
            str(images),
            "--model",
            str(tiny_model_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["image"]["name"] for line in done.stdout.splitlines()] == [
        "a_wide.jpg",
        "b_tall.png",
    ]
    assert "INFO" in done.stderr  # the logs went to stderr
