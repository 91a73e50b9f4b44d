"""Golden tests on the bundled, trained models (models/ + manifest.json).

The figures asserted here are the model's measured quality with slack, so a broken export,
pre-processing change or decode regression fails them; the held-out evaluation itself is
``scripts/evaluate.py`` (figures in the manifest and the README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inspector.detector import Detector
from inspector.evaluation import box_iou
from inspector.integrity import sha256_file
from inspector.models import load_manifest
from inspector.synth import SynthConfig, generate, write_image

GOLDEN_SEED = 9_500_000  # a test seed: never used for training, calibration or evaluation
DEFECTS = 12
CLEAN = 12
MIN_DEFECTS_FLAGGED = 11  # measured: 12 of 12 (model 1.0.0)
MAX_CLEAN_FLAGGED = 1  # measured: 0 of 12


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def test_every_bundled_model_matches_its_manifest_entry(manifest):
    assert {m.precision for m in manifest.models} == {"fp32", "int8"}
    for entry in manifest.models:
        path = manifest.path_of(entry)
        assert sha256_file(path) == entry.sha256, f"{path} differs from the manifest"
        model = Detector.from_path(path).model
        assert model.input_size == entry.input_size.to_size()
        assert model.class_names == entry.classes == ("scratch",)
        assert model.sha256 == entry.sha256


@pytest.fixture(scope="module")
def golden_images(tmp_path_factory):
    """docs/data-spec.md defect images (1-4 scratches, none faint) and clean ones, on disk."""
    folder = tmp_path_factory.mktemp("golden")
    truth: dict[str, np.ndarray] = {}
    defect_config = SynthConfig(p_clean=0.0, min_scratches=1, faint_fraction=0.0)
    clean_config = SynthConfig(p_clean=1.0)
    for index in range(DEFECTS):
        sample = generate(GOLDEN_SEED, index, defect_config)
        truth[write_image(sample, folder / f"defect_{index:02d}").name] = sample.boxes_xyxy
    for index in range(CLEAN):
        sample = generate(GOLDEN_SEED + 1, index, clean_config)
        truth[write_image(sample, folder / f"clean_{index:02d}").name] = sample.boxes_xyxy
    return folder, truth


def predict(folder: Path, *extra: str) -> dict[str, dict]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "inspector", "predict", str(folder), "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    return {r["image"]["name"]: r for r in map(json.loads, out.splitlines())}


def test_predict_finds_scratches_where_they_are_and_passes_clean_tags(golden_images):
    folder, truth = golden_images
    results = predict(folder)  # the bundled default (fp32) model, default threshold
    assert set(results) == set(truth)
    flagged_defects = [
        n for n in results if n.startswith("defect") and results[n]["verdict"] == "defect"
    ]
    flagged_clean = [
        n for n in results if n.startswith("clean") and results[n]["verdict"] == "defect"
    ]
    assert len(flagged_defects) >= MIN_DEFECTS_FLAGGED, flagged_defects
    assert len(flagged_clean) <= MAX_CLEAN_FLAGGED, flagged_clean
    for name in flagged_defects:  # the boxes are where the scratches are, in source pixels
        boxes = np.array([d["box"] for d in results[name]["detections"]])
        assert box_iou(boxes, truth[name]).max() >= 0.3, name


def test_int8_agrees_with_fp32(golden_images, manifest):
    folder, _ = golden_images
    int8 = next(m for m in manifest.models if m.precision == "int8")
    fp32 = predict(folder)
    quantized = predict(folder, "--model", str(manifest.path_of(int8)))
    agree = sum(fp32[n]["verdict"] == quantized[n]["verdict"] for n in fp32)
    assert agree >= len(fp32) - 1  # measured: all 24 agree
