"""``inspector bench --quick`` end to end on tiny stand-in models (no timing assertions), and the
report's grading on hand-made documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.bench.report import grade, render_markdown
from inspector.bench.runner import bundled_models, describe_models
from inspector.cli import main
from inspector.types import Size
from onnx_factory import conv_proxy_model, write_model

pytest.importorskip("psutil")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def proxy_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small conv nets with a real (1, 5, N) head; the second one named like an INT8 file
    (same weights: this checks the plumbing, not quantisation)."""
    folder = tmp_path_factory.mktemp("models")
    model = conv_proxy_model(input_size=Size(96, 128), widths=(8, 8, 16, 16, 32),
                             blocks_per_level=1)
    return [write_model(folder / "proxy.onnx", model),
            write_model(folder / "proxy-int8.onnx", model)]


def test_quick_run_writes_json_markdown_and_plots(tmp_path: Path, proxy_models: list[Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    rc = main(["bench", "--quick", "--models", *map(str, proxy_models), "--threads", "1", "2",
               "--soak", "6", "--out-dir", str(out), "--stem", "ci"])
    assert rc == 0
    doc = json.loads((out / "ci.json").read_text())
    assert {"schema", "host", "date", "machine", "models", "configs", "publish_ms", "memory",
            "nms", "ultralytics", "soak", "profile", "goals", "notes", "plots",
            "phase_seconds"} <= set(doc)
    assert doc["quick"] is True
    assert [(c["model"], c["threads"]) for c in doc["configs"]] == [
        ("proxy", 1), ("proxy", 2), ("proxy-int8", 1), ("proxy-int8", 2)]
    for config in doc["configs"]:
        assert {"decode", "letterbox", "tensor", "preprocess", "inference", "postprocess",
                "total"} == set(config["stages_ms"])
        assert config["stages_ms"]["inference"]["median_ms"] > 0
        assert config["raw_session"]["images_per_s"] > 0
        service = config["service"]
        assert "error" not in service, service.get("error")
        assert service["burst"]["images"] == 12
        assert service["burst"]["images_per_s"] > 0
        assert set(service["burst"]["stages_ms"]) >= {"decode", "inference", "postprocess"}
        assert service["single_latency_ms"]["n"] == 2
        assert service["single_overhead_ms"]["n"] == 2
        assert sum(s["n"] for s in service["single_overhead_ms_after"].values()) == 2
        assert service["startup"]["to_first_result_s"] > 0
        assert service["rss_peak_mb"] > 0
        assert config["burst_over_raw"] > 0
        if config["threads"] == 2:  # the highest setting: one worker per core, the ceiling
            per_core = config["per_core_workers"]
            assert "error" not in per_core, per_core.get("error")
            assert per_core["images_per_s"] > 0 and per_core["single_latency_ms"]["n"] == 2
            assert config["per_core_over_default"] > 0
            assert config["frames_in_parallel"]["workers"] == 2
            assert config["frames_in_parallel_over_raw"] > 0
        assert config["where_time_goes"]["stage_share"]
    assert [(r["boxes"], r["candidates"]) for r in doc["nms"]] == [
        (kind, n) for kind in ("clustered", "scattered") for n in (10, 100, 1000)]
    assert doc["publish_ms"]["n"] > 0
    assert [m["model"] for m in doc["memory"]] == ["proxy"]  # quick: the first model only
    assert doc["memory"][0]["steps"][-1]["rss_mb"] > 0
    assert doc["soak"]["images"] == 6 and doc["soak"]["rss_after_mb"] > 0
    assert doc["soak"]["mode"] == "standalone, AnnotateOutbox on"
    assert doc["soak"]["rss_peak_mb"] >= doc["soak"]["rss_after_mb"]
    assert doc["profile"]["top"]
    assert "error" not in doc["service_profile"], doc["service_profile"].get("error")
    assert doc["service_profile"]["top"]
    assert doc["ultralytics"]["status"] == "skipped"
    assert any("Ultralytics comparison skipped" in note for note in doc["notes"])
    graded = {g["key"] for g in doc["goals"]}
    assert {"burst_over_raw", "single_over_session", "int8_speedup", "rss_peak_mb",
            "soak_rss_after_mb", "soak_rss_growth_mb", "soak_rss_peak_mb"} <= graded
    assert "nms_over_cv2_1000" not in graded  # NMS is compared with OpenCV, not graded

    markdown = (out / "ci.md").read_text()
    for heading in ("## Goals", "## Throughput and latency per configuration",
                    "## Per-stage latency", "## Where the service's time goes",
                    "## Where the memory goes",
                    "## NMS: ours vs cv2.dnn.NMSBoxes", "## Ultralytics' predictor", "## Soak",
                    "## Profile of the service during a burst", "## Profile of the per-image"):
        assert heading in markdown
    if doc["plots"]:  # matplotlib installed (the bench extra)
        assert all((out / name).stat().st_size > 0 for name in doc["plots"])
        assert "ci-stages.png" in doc["plots"] and "ci-throughput.png" in doc["plots"]
    printed = capsys.readouterr().out
    assert f"wrote {out / 'ci.md'}" in printed
    assert "quick run: indicative only" in printed
    goal_lines = [line for line in printed.splitlines()
                  if line.lstrip().startswith(("met ", "MISSED ", "n/a "))]
    assert goal_lines and all(line.endswith("[quick run: indicative only]")
                              for line in goal_lines)


def test_a_quick_report_never_takes_a_full_runs_name() -> None:
    from datetime import datetime, timezone

    from inspector.commands.bench import default_stem

    when = datetime(2026, 12, 1, 23, 59, tzinfo=timezone.utc)
    assert default_stem("vm", when, quick=False) == "vm-2026-12-01"
    assert default_stem("vm", when, quick=True) == "vm-2026-12-01-quick"


def test_no_model_anywhere_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INSPECTOR_MODELS_DIR", str(tmp_path))
    assert main(["bench", "--quick", "--out-dir", str(tmp_path / "out")]) == 2
    assert "--model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--models", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_precision_from_manifest_else_file_name(tmp_path: Path) -> None:
    a = tmp_path / "m.onnx"
    b = tmp_path / "m-int8.onnx"
    assert [m.precision for m in describe_models([a, b])] == ["fp32", "int8"]
    (tmp_path / "manifest.json").write_text(json.dumps({
        "schema": "inspector.models/1", "default": "m.onnx",
        "models": [{"file": "m.onnx", "name": "m", "version": "1", "precision": "int8",
                    "sha256": "0" * 64, "input_size": {"height": 64, "width": 64},
                    "classes": ["scratch"]}]}))
    assert describe_models([a])[0].precision == "int8"


def _manifest(folder: Path, *entries: tuple[str, str]) -> None:
    (folder / "manifest.json").write_text(json.dumps({
        "schema": "inspector.models/1", "default": entries[0][0],
        "models": [{"file": file, "name": "m", "version": "1", "precision": precision,
                    "sha256": "0" * 64, "input_size": {"height": 64, "width": 64},
                    "classes": ["scratch"]} for file, precision in entries]}))
    for file, _ in entries:
        (folder / file).write_bytes(b"")


def test_bundled_models_are_the_fp32_and_int8_ones(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR_MODELS_DIR", str(tmp_path))
    _manifest(tmp_path, ("a.onnx", "fp32"), ("a-q.onnx", "int8"))
    paths, notes = bundled_models()
    assert [p.name for p in paths] == ["a.onnx", "a-q.onnx"] and notes == []
    assert [m.precision for m in describe_models(paths)] == ["fp32", "int8"]


def test_without_a_bundled_int8_model_only_fp32_with_a_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR_MODELS_DIR", str(tmp_path))
    _manifest(tmp_path, ("a.onnx", "fp32"))
    paths, notes = bundled_models()
    assert [p.name for p in paths] == ["a.onnx"]
    assert "INT8 not measured" in notes[0]


def _doc(**overrides: object) -> dict:
    config = {
        "model": "m", "precision": "fp32", "threads": 2,
        "stages_ms": {s: {"median_ms": 1.0, "p95_ms": 2.0} for s in (
            "decode", "letterbox", "tensor", "preprocess", "inference", "postprocess", "total")},
        "raw_session": {"images_per_s": 100.0, "session_ms": {"median_ms": 10.0}},
        "detector_loop": {"images_per_s": 50.0},
        "burst_over_raw": 0.9,
        "service": {"rss_peak_mb": 210.0, "startup": {"to_first_result_s": 1.0},
                    "single_latency_ms": {"median_ms": 20.0, "p95_ms": 30.0},
                    "burst": {"images_per_s": 90.0, "rss_steady_mb": 150.0,
                              "service_cpu_cores": 1.8,
                              "stages_ms": {s: {"median_ms": 5.0} for s in (
                                  "decode", "preprocess", "inference", "postprocess")}}},
    }
    nms = {"kept": 5, "ours_ms": 1.0, "cv2_ms": 1.0, "cv2_prebuilt_lists_ms": 1.0,
           "same_as_cv2": True}
    doc = {"configs": [config], "nms": [
        {**nms, "boxes": "clustered", "candidates": 1000, "ours_over_cv2": 0.5},
        {**nms, "boxes": "scattered", "candidates": 1000, "ours_over_cv2": 1.2}],
        "ultralytics": {"runs": []}, "soak": None}
    doc.update(overrides)
    return doc


def test_grade_says_by_how_much_a_goal_is_missed() -> None:
    goals = {g["key"]: g for g in grade(_doc())}
    assert goals["burst_over_raw"]["met"] is False
    assert goals["burst_over_raw"]["shortfall"].startswith("missed by 25.0%")  # 0.9 vs 1.2
    assert "session alone 10.0 ms" in goals["burst_over_raw"]["detail"]
    assert goals["single_over_session"]["value"] == pytest.approx(2.0)  # 20 ms / 10 ms
    assert goals["single_over_session"]["shortfall"].startswith("missed by 53.8%")
    assert goals["rss_peak_mb"]["met"] is False
    assert "int8_speedup" not in goals  # no INT8 model in this run
    assert "over_ultralytics" not in goals


def test_grade_int8_and_ultralytics() -> None:
    doc = _doc()
    int8 = json.loads(json.dumps(doc["configs"][0]))
    int8.update(model="m-int8", precision="int8", raw_session={
        "images_per_s": 180.0, "session_ms": {"median_ms": 5.5}})
    doc["configs"].append(int8)
    doc["ultralytics"] = {"status": "ran", "note": "x", "runs": [
        {"model": "m", "precision": "fp32", "images": 10, "ours_loop": {"images_per_s": 50.0},
         "theirs": {"images_per_s": 60.0}, "ours_loop_over_theirs": 50 / 60}]}
    goals = {g["key"]: g for g in grade(doc)}
    assert goals["int8_speedup"]["value"] == pytest.approx(1.8)
    assert goals["int8_speedup"]["met"] is True
    assert goals["over_ultralytics"]["value"] == pytest.approx(1.5)  # burst 90 / 60
    assert goals["over_ultralytics"]["met"] is True
    doc.update(host="h", date="d", started_utc="s", duration_s=1.0, quick=False, models=[],
               machine={"processor": "p", "cpu_count": 2, "platform": "x", "python": "3",
                        "onnxruntime": "1", "opencv": "4"}, publish_ms=None, profile=None,
               notes=[])
    text = render_markdown(doc, grade(doc), [])
    assert "| INT8 / fp32 session throughput |" in text



def test_the_ultralytics_ratio_uses_the_median_ms_of_one_predict_call() -> None:
    """One predict() call per file: the goal compares the burst with the median call (a slow
    first call or a stray stall does not move it), and the report shows that median."""
    doc = _doc()
    doc["ultralytics"] = {"status": "ran", "note": "x", "runs": [
        {"model": "m", "precision": "fp32", "images": 10, "ours_loop": {"images_per_s": 50.0},
         "theirs": {"images_per_s": 40.0, "ms_per_image_median": 20.0,
                    "ms_per_image_p95": 31.0}, "ours_loop_over_theirs": 50 / 40}]}
    goal = next(g for g in grade(doc) if g["key"] == "over_ultralytics")
    assert goal["value"] == pytest.approx(90 / 50)  # burst 90 img/s vs 1000 / 20 ms
    assert "20.0 ms/image (median of one predict() call per file)" in goal["detail"]

def test_without_psutil_says_what_to_install(tmp_path: Path, proxy_models: list[Path],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psutil" else real(name, *a))
    assert main(["bench", "--quick", "--models", str(proxy_models[0]),
                 "--out-dir", str(tmp_path)]) == 2
    assert "inspector[bench]" in capsys.readouterr().err


def test_the_stages_plot_shows_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session is ~1000x the letterbox: on a linear axis only its bar was visible."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from inspector.bench.report import STAGE_ROWS, write_plots

    doc = _doc(host="h", publish_ms={"median_ms": 0.4})
    medians = {"decode": 2.0, "letterbox": 0.05, "tensor": 0.3, "preprocess": 0.5,
               "inference": 60.0, "postprocess": 0.4, "total": 63.0}
    doc["configs"][0]["stages_ms"] = {s: {"median_ms": m, "p95_ms": m * 1.2}
                                      for s, m in medians.items()}
    axes: list = []
    real = plt.subplots

    def subplots(*args: object, **kwargs: object) -> object:
        fig, ax = real(*args, **kwargs)
        axes.append(ax)
        return fig, ax

    monkeypatch.setattr(plt, "subplots", subplots)
    paths, _ = write_plots(doc, tmp_path, "t")
    assert tmp_path / "t-stages.png" in paths
    stages_ax = axes[0]
    assert stages_ax.get_yscale() == "log"
    heights = [bar.get_height() for bar in stages_ax.patches]
    assert len(heights) == len(STAGE_ROWS) + 1  # every stage, and the publish bar
    bottom, top = stages_ax.get_ylim()
    assert all(bottom < h <= top for h in heights)
    assert min(heights) / max(heights) < 0.01  # and still drawn: a log axis spans them


def test_soak_growth_is_a_trend_not_one_point_against_another() -> None:
    from inspector.bench.service import soak_growth

    jitter = [161.5, 169.9, 168.2, 169.9, 162.2, 168.8, 170.4, 170.7, 162.7, 166.7, 169.3, 170.9]
    flat = soak_growth([{"images": 100 * (i + 1), "rss_mb": v} for i, v in enumerate(jitter)])
    assert abs(flat["rss_growth_mb"]) < 2  # last minus first would say 9.4 MB
    leak = soak_growth([{"images": 100 * (i + 1), "rss_mb": 160.0 + i} for i in range(12)])
    assert leak["rss_growth_mb"] == 7.0  # medians 162 and 169
