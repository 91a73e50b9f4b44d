"""Ultralytics' predictor as the reference, in a subprocess of an interpreter that has it.

``find_interpreter`` picks this interpreter when ultralytics is importable here (the ``bench``
extra plus ultralytics), else the one named by ``--ultralytics-python``; without either the
comparison is skipped with a note.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("ultralytics_predict.py")


def find_interpreter(named: Path | None) -> tuple[str | None, str]:
    """(python to run, why); None with the reason when there is none."""
    if named is not None:
        if not os.access(named, os.X_OK):
            return None, f"--ultralytics-python {named} is not an executable"
        return str(named), f"--ultralytics-python {named}"
    if importlib.util.find_spec("ultralytics") is not None:
        return sys.executable, "ultralytics is importable here"
    return None, ("ultralytics is not installed here and no --ultralytics-python was given "
                  "(e.g. --ultralytics-python /opt/train-venv/bin/python)")


def run_ultralytics(python: str, model: Path, images: Sequence[Path], imgsz: tuple[int, int],
                    work: Path, *, conf: float, iou: float, timeout_s: float = 900
                    ) -> dict[str, Any]:
    """Run the predictor script; its JSON, or {"error": ...} with the output's tail."""
    work.mkdir(parents=True, exist_ok=True)
    listing = work / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    out = work / "ultralytics.json"
    config_dir = work / "yolo-config"
    config_dir.mkdir(exist_ok=True)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
           "YOLO_CONFIG_DIR": str(config_dir), "YOLO_VERBOSE": "False",
           "ORT_DISABLE_TELEMETRY": "1"}
    env.pop("PYTHONPATH", None)
    command = [python, str(SCRIPT), "--model", str(model), "--images", str(listing),
               "--imgsz", str(imgsz[0]), str(imgsz[1]), "--conf", str(conf), "--iou", str(iou),
               "--out", str(out)]
    try:
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if done.returncode != 0 or not out.exists():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        return {"error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["python"] = python
    return result
