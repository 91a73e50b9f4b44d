"""Smoke test: benchmarks/bench_core.py runs on a tiny model and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from script_loader import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_core.py"


def test_bench_core_runs_and_writes_json(tmp_path: Path, tiny_model_path: Path, capsys):
    bench = load_script(BENCH)
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tiny_model_path), "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["stages_ms"]) == {
        "decode",
        "letterbox",
        "tensor",
        "preprocess",
        "session",
        "post",
    }
    assert [(r["boxes"], r["candidates"]) for r in report["nms"]] == [
        (kind, n) for kind in ("clustered", "scattered") for n in (10, 100, 1000)
    ]
    assert all(r["same_as_cv2"] for r in report["nms"])
    assert "post / session" in capsys.readouterr().out


def test_bench_core_without_a_model_says_so(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("INSPECTOR_MODELS_DIR", str(tmp_path))
    bench = load_script(BENCH)
    assert bench.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "--model" in capsys.readouterr().err
