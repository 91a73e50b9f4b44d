"""``inspector predict`` end to end through the CLI, on a tiny real ONNX model."""

from __future__ import annotations

import json
import os
import re
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
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] if "error" in r else r["image"]["name"] for r in records] == [
        str(text), "a_wide.jpg", str(missing)]
    assert "not an image" in records[0]["error"]
    assert records[2] == {"image": str(missing), "error": "file not found"}  # never existed
    lines = err.splitlines()
    assert any(str(text) in line and "not an image" in line for line in lines)
    assert any(str(missing) in line and "not found" in line for line in lines)


def test_human_output_and_thresholds(capsys, images, tiny_model_path):
    code, out, _ = run_cli(
        capsys, str(images / "a_wide.jpg"), "--model", str(tiny_model_path), "--conf", "0.95"
    )
    assert code == 0
    assert out.startswith(f"image 1/1 {images / 'a_wide.jpg'} 1280x960: no detections, pass, ")
    code, out, _ = run_cli(
        capsys, str(images / "a_wide.jpg"), "--model", str(tiny_model_path), "--iou", "0.95"
    )
    assert "1280x960: 2 scratches, defect, " in out  # the duplicate NMS drops at 0.7 is kept


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
    # --json into a pipe is quiet: no progress lines, no summary
    assert "image 1/2" not in done.stderr and "Speed:" not in done.stderr


def test_progress_lines_and_summary_like_yolo_predict(capsys, images, tmp_path, tiny_model_path):
    code, out, err = run_cli(capsys, str(images), "--model", str(tiny_model_path),
                             "--save", str(tmp_path / "saved"))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2  # stdout: only the results
    assert re.fullmatch(rf"image 1/2 {re.escape(str(images / 'a_wide.jpg'))} 1280x960: "
                        r"1 scratch, defect, \d+ ms", lines[0])
    assert lines[1].startswith(f"image 2/2 {images / 'b_tall.png'} 960x1280: 1 scratch, defect")
    assert re.search(r"^Speed: [\d.]+ ms decode, [\d.]+ ms preprocess, [\d.]+ ms inference, "
                     r"[\d.]+ ms postprocess per image at shape \(1, 3, 640, 640\)$", err, re.M)
    assert "2 image(s): 2 defect, 0 pass, 0 failed" in err
    assert f"Results saved to {tmp_path / 'saved'}" in err
    assert "notes.txt" in err  # passed over, and said so


def test_json_to_a_terminal_shows_progress_on_stderr(capsys, monkeypatch, images,
                                                     tiny_model_path):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    code, out, err = run_cli(capsys, str(images), "--model", str(tiny_model_path), "--json")
    assert code == 0
    assert all(json.loads(line)["schema"] for line in out.splitlines())
    assert "image 1/2" in err and "Speed:" in err


def test_exit_2_when_nothing_is_usable(capsys, tmp_path, tiny_model_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(capsys, str(empty), "--model", str(tiny_model_path))
    assert code == 2 and out == ""
    assert "no image files" in err


def test_quoted_globs_are_expanded(capsys, images, tiny_model_path):
    code, out, _ = run_cli(capsys, str(images / "*.jpg"), "--model", str(tiny_model_path),
                           "--json")
    assert code == 0
    assert [json.loads(line)["image"]["name"] for line in out.splitlines()] == ["a_wide.jpg"]
    code, out, _ = run_cli(capsys, str(images / "*.gif"), "--model", str(tiny_model_path),
                           "--json")
    assert code == 1
    assert json.loads(out) == {"image": str(images / "*.gif"),
                               "error": "no file matches this pattern"}


def test_save_never_overwrites_same_named_files(capsys, tmp_path, tiny_model_path):
    for folder, grey in (("line1", 60), ("line2", 200)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.png"), np.full((480, 640, 3), grey, np.uint8))
    saved = tmp_path / "saved"
    code, _, err = run_cli(capsys, str(tmp_path / "line1"), str(tmp_path / "line2"),
                           "--model", str(tiny_model_path), "--save", str(saved))
    assert code == 0, err
    assert sorted(p.name for p in saved.iterdir()) == ["x-2.png", "x.png"]
    assert cv2.imread(str(saved / "x.png"))[5, 5].tolist() == [60, 60, 60]
    assert cv2.imread(str(saved / "x-2.png"))[5, 5].tolist() == [200, 200, 200]
    assert "saved as" in err


def test_refuses_what_run_refuses(capsys, tmp_path, images, tiny_model_path):
    from bad_images import png_header_only

    webp = tmp_path / "shot.webp"
    cv2.imwrite(str(webp), np.full((48, 64, 3), 90, np.uint8))
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(7000, 7000))  # 49 MP, over MaxImagePixels (40 MP)
    code, out, err = run_cli(capsys, str(webp), str(huge), str(images / "a_wide.jpg"),
                             "--model", str(tiny_model_path), "--json")
    assert code == 1
    refused, too_big, fine = (json.loads(line) for line in out.splitlines())
    assert refused["image"] == str(webp) and "Extensions" in refused["error"]
    assert too_big["image"] == str(huge) and "over the limit of 40000000" in too_big["error"]
    assert fine["verdict"] == "defect"
    (images / "c.webp").write_bytes(webp.read_bytes())
    code, out, err = run_cli(capsys, str(images), "--model", str(tiny_model_path))
    assert code == 0 and len(out.splitlines()) == 2
    assert "passed over 2 file(s) with other extensions: c.webp, notes.txt" in err


def test_a_closed_pipe_ends_quietly(images, tiny_model_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first result (as `| head` after a line)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "inspector", "predict", str(images), "--model",
             str(tiny_model_path), "--json"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"},
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 0
