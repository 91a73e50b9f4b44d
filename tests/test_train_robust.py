"""scripts/train_robust.sh end to end on a tiny config, without torch.

Only the three steps that need torch/Ultralytics or take minutes are stood in for, by a Python
wrapper given as PY/RUN_PY: train.py (writes the run folder and its record, as the real one
does), export_model.py and quantize_model.py (copy a real ONNX file: the bundled 1.2.0 model or
a model that never detects anything). Data generation, crops, our evaluation of the candidate
and the current models on the domain and OOD sets, the manifest and the gate run for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_factory import constant_head_model, head_tensor, write_model
from script_loader import REPO

FAKE_PY = """#!{python}
import json, os, runpy, shutil, sys
from pathlib import Path

script, args = sys.argv[1], sys.argv[2:]
name = Path(script).name


def value(flag):
    return args[args.index(flag) + 1]


if name == "train.py":
    with open(os.environ["CALLS"], "a") as calls:
        calls.write(json.dumps(args) + "\\n")
    run = Path(value("--project")) / value("--name")
    (run / "weights").mkdir(parents=True, exist_ok=True)
    (run / "weights" / "best.pt").write_text("weights of " + value("--name"))
    record = {{"args": {{"device": value("--device")}}, "wall_s": 2.0,
               "epochs_run": int(value("--epochs")), "best": str(run / "weights" / "best.pt")}}
    (run / "inspector_train.json").write_text(json.dumps(record))
elif name == "export_model.py":
    shutil.copy(os.environ["FAKE_FP32"], args[1])
elif name == "onnx_to_weights.py":
    with open(os.environ["CALLS"], "a") as calls:
        calls.write(json.dumps([name, *args]) + "\\n")
    Path(args[1]).write_text("rebuilt from " + args[0])
elif name == "quantize_model.py":
    shutil.copy(os.environ["FAKE_INT8"], args[1])
else:
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "fakepy"
    fake.write_text(FAKE_PY.format(python=sys.executable))
    fake.chmod(0o755)
    models = tmp_path / "models"
    models.mkdir()
    for name in ("scratch-yolov8n.onnx", "scratch-yolov8n-int8.onnx"):
        (models / name).write_bytes((REPO / "models" / name).read_bytes())
    return {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PY": str(fake),
        "RUN_PY": str(fake),
        "CALLS": str(tmp_path / "calls.jsonl"),
        "MODELS": str(models),
        "DATA": str(tmp_path / "data"),
        "RUNS": str(tmp_path / "runs"),
        "OUT": str(tmp_path / "out"),
        "ROBUST_COUNT": "6",
        "DOMAIN_COUNT": "3",
        "EPOCHS_A": "2",
        "EPOCHS_B": "1",
        "EVAL_COUNT": "3",
        "BATCH": "4",
        "WORKERS": "1",
        "TQDM_DISABLE": "1",
    }


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "train_robust.sh")], env=env,
                          capture_output=True, text=True, timeout=120)


def _calls(env: dict[str, str]) -> list[list[str]]:
    return [json.loads(line) for line in Path(env["CALLS"]).read_text().splitlines()]


def test_an_equal_candidate_passes_the_gate_and_is_published(setup, tmp_path):
    env = {**setup, "PUBLISH": "1", "FAKE_FP32": str(REPO / "models" / "scratch-yolov8n.onnx"),
           "FAKE_INT8": str(REPO / "models" / "scratch-yolov8n-int8.onnx")}
    base = tmp_path / "models" / "scratch-yolov8n.pt"
    base.write_text("1.2.0 weights")
    done = _run(env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ACCEPTED" in done.stdout and "published 1.3.0" in done.stdout

    # fine-tuned from the base weights: stage A from them, stage B from stage A, no crops stage
    calls = _calls(env)
    assert [c[c.index("--name") + 1] for c in calls] == ["robust-a", "robust-b"]
    assert calls[0][calls[0].index("--weights") + 1] == str(base)
    assert calls[1][calls[1].index("--weights") + 1].endswith("runs/robust-a/weights/best.pt")
    assert calls[0][calls[0].index("--box") + 1] == "9.0"
    mix = Path(calls[0][calls[0].index("--data") + 1]).read_text()
    assert "robust640/images/train" in mix and "domain640/images/train" in mix
    robust = json.loads((tmp_path / "data" / "robust640" / "synth.json").read_text())
    assert robust["profile"] == "randomized" and robust["seed"] == 41

    out = tmp_path / "out"
    evaluation = json.loads((out / "eval.json").read_text())
    assert set(evaluation["sets"]) == {"domain", "ood"}
    names = [r["model"] for r in evaluation["sets"]["ood"]["results"] if "recall_by" in r]
    assert names == ["previous-scratch-yolov8n.onnx", "previous-scratch-yolov8n-int8.onnx",
                     "scratch-yolov8n.onnx", "scratch-yolov8n-int8.onnx"]
    gate = json.loads((out / "gate.json").read_text())
    assert gate["accepted"] is True and gate["reasons"] == []
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert {m["version"] for m in manifest["models"]} == {"1.3.0"}
    assert manifest["models"][0]["training"]["epochs"] == 3
    assert (tmp_path / "models" / "scratch-yolov8n.pt").read_text() == "weights of robust-b"
    assert "previous-scratch-yolov8n.onnx" in (tmp_path / "models" / "eval.md").read_text()


def test_a_worse_candidate_is_refused_and_not_published(setup, tmp_path):
    blind = write_model(tmp_path / "blind.onnx",
                        constant_head_model(head_tensor([(320.0, 240.0, 40.0, 20.0, 0.0)])))
    env = {**setup, "PUBLISH": "1", "FAKE_FP32": str(blind), "FAKE_INT8": str(blind),
           "EPOCHS_B": "0", "CROPS_EPOCHS": "1", "RECOVER": "0"}
    before = (tmp_path / "models" / "scratch-yolov8n.onnx").read_bytes()
    done = _run(env)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "REFUSED" in done.stderr and "NOT published" in done.stderr
    assert "scratch-yolov8n.onnx domain: map50 0.0000 < current" in done.stderr
    # no base weights: from yolov8n.yaml, a crops stage first, then stage A from its weights
    calls = _calls(env)
    assert [c[c.index("--name") + 1] for c in calls] == ["robust-crops320", "robust-a"]
    assert "--weights" not in calls[0]
    assert (tmp_path / "models" / "scratch-yolov8n.onnx").read_bytes() == before
    assert not (tmp_path / "models" / "manifest.json").exists()


def test_without_weights_the_current_model_is_rebuilt_from_its_onnx(setup, tmp_path):
    env = {**setup, "FAKE_FP32": str(REPO / "models" / "scratch-yolov8n.onnx"),
           "FAKE_INT8": str(REPO / "models" / "scratch-yolov8n-int8.onnx"), "EPOCHS_B": "0"}
    done = _run(env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accepted in" in done.stdout and "PUBLISH=1" in done.stdout
    calls = _calls(env)
    rebuilt = str(tmp_path / "out" / "base-from-onnx.pt")
    data = tmp_path / "data"
    assert calls[0] == ["onnx_to_weights.py", str(tmp_path / "models" / "scratch-yolov8n.onnx"),
                        rebuilt, "--calibrate", str(data / "domain640" / "images" / "train"),
                        str(data / "robust640" / "images" / "train")]
    assert [c[c.index("--name") + 1] for c in calls[1:]] == ["robust-a"]
    assert calls[1][calls[1].index("--weights") + 1] == rebuilt
    assert not (tmp_path / "models" / "manifest.json").exists()  # not published without PUBLISH


def test_gate_targets_and_old_single_set_files():
    from script_loader import load_script

    model_gate = load_script("scripts/model_gate.py")
    row = {"map50": 0.95, "image_recall": 0.995, "image_precision": 0.99}
    rows = {"fp32.onnx": {"domain": row, "ood": {**row, "map50": 0.90}},
            "int8.onnx": {"domain": {**row, "map50": 0.93}, "ood": {**row, "map50": 0.90}}}
    missed = model_gate.targets(rows, "fp32.onnx", "int8.onnx")
    assert missed == [
        "OOD mAP50 0.9000 < 0.92 (short by 0.0200)",
        "OOD mAP50 0.0500 below in-distribution (target: within 0.03)",
        "domain: INT8 mAP50 0.9300 more than 0.01 below fp32 0.9500",
    ]
    rows["fp32.onnx"]["ood"] = {**row, "map50": 0.93}
    rows["int8.onnx"] = {"domain": row, "ood": {**row, "map50": 0.925}}
    assert model_gate.targets(rows, "fp32.onnx", "int8.onnx") == []
    # an evaluate.py file from before --set: its one set is the domain set
    old = {"seed": 9_000_000, "count": 300, "results": [{"model": "fp32.onnx", **row}]}
    assert model_gate.per_set(old, "fp32.onnx")["domain"]["seed"] == 9_000_000
