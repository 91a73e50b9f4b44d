"""Grade a benchmark document against the goals and write it: JSON, markdown, PNG plots.

    paths = write_report(document, out_dir, stem)   # {"json": ..., "markdown": ..., "plots": [...]}

Plots need matplotlib (the ``bench`` extra); without it they are skipped with a note.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.bench.timing import ratio

STAGE_ROWS = ("decode", "letterbox", "tensor", "preprocess", "inference", "postprocess")
FLOOR_MS = 0.001  # bars of the log-scale stages plot start here (a 0 ms bar has no log)
SERVICE_STAGES = ("decode", "preprocess", "inference", "postprocess")

# key -> (what, comparison, goal, unit)
GOALS: dict[str, tuple[str, str, float, str]] = {
    # issue 13: the service on a burst beats the raw 2-thread session loop (frames in parallel)
    "burst_over_raw": ("service burst / raw session throughput", ">=", 1.2, "x"),
    "single_over_session": ("single image (file closed -> result) / one session run", "<=", 1.3,
                            "x"),
    "int8_speedup": ("INT8 / fp32 session throughput", ">=", 1.5, "x"),
    "rss_peak_mb": ("peak RSS of the service", "<=", 200.0, "MB"),
    "soak_rss_after_mb": ("RSS after the soak", "<=", 200.0, "MB"),
    "soak_rss_growth_mb": ("RSS growth over the soak", "<=", 5.0, "MB"),
    "soak_rss_peak_mb": ("peak RSS over the soak", "<=", 200.0, "MB"),
    "over_ultralytics": ("service burst / Ultralytics' predictor throughput", ">=", 1.3, "x"),
}


def grade(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal that this run could measure."""
    rows: list[dict[str, Any]] = []
    configs = doc.get("configs", [])
    top = max((c["threads"] for c in configs), default=0)

    def add(key: str, value: float | None, scope: str, detail: str = "") -> None:
        what, op, goal, unit = GOALS[key]
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        rows.append({"key": key, "what": what, "scope": scope, "value": value, "goal": goal,
                     "op": op, "unit": unit, "met": met, "shortfall": _shortfall(value, op, goal),
                     "detail": detail})

    for c in configs:
        if c["threads"] == top and c.get("service") is not None:
            add("burst_over_raw", c.get("burst_over_raw"), f"{c['model']}, {top} threads",
                _burst_detail(c))
            single = ((c.get("service") or {}).get("single_latency_ms") or {}).get("median_ms")
            alone = c["raw_session"]["session_ms"]["median_ms"]
            add("single_over_session", ratio(single, alone), f"{c['model']}, {top} threads",
                _single_detail(c))
    fp32 = _first(configs, "fp32", top)
    int8 = _first(configs, "int8", top)
    if fp32 and int8:
        e2e = ratio(_burst_ips(int8), _burst_ips(fp32))
        detail = f"end to end (service burst): {_fmt(e2e)}x"
        for threads in sorted({c["threads"] for c in configs} - {top}):
            a, b = _first(configs, "int8", threads), _first(configs, "fp32", threads)
            if a and b:
                detail += (f"; session at {threads} thread(s): " + _fmt(ratio(
                    a["raw_session"]["images_per_s"], b["raw_session"]["images_per_s"])) + "x")
        add("int8_speedup", ratio(int8["raw_session"]["images_per_s"],
                                  fp32["raw_session"]["images_per_s"]),
            f"{int8['model']} / {fp32['model']}, {top} threads", detail)
    peaks = [(c["service"]["rss_peak_mb"], c) for c in configs
             if c.get("service") and c["service"].get("rss_peak_mb") is not None]
    if peaks:
        value, where = max(peaks, key=lambda p: p[0])
        add("rss_peak_mb", value, f"highest of the service runs ({where['model']}, "
            f"{where['threads']} threads)", _memory_detail(doc, where["model"]))
    soak = doc.get("soak")
    if soak and "error" not in soak:
        scope = f"{soak['images']} images, {soak['model']}, {soak['threads']} threads"
        add("soak_rss_after_mb", soak["rss_after_mb"], scope)
        add("soak_rss_growth_mb", soak["rss_growth_mb"], scope, soak["rss_growth_from"])
        add("soak_rss_peak_mb", soak["rss_peak_mb"], scope, soak.get("mode", ""))
    for run in doc.get("ultralytics", {}).get("runs", []):
        if run["precision"] != "fp32" and any(r["precision"] == "fp32"
                                              for r in doc["ultralytics"]["runs"]):
            continue
        config = next((c for c in configs if c["model"] == run["model"]
                       and c["threads"] == top), None)
        theirs = _their_ips(run["theirs"])
        service_ips = _burst_ips(config)
        if service_ips is None:  # --no-service: the like-for-like loop is all there is
            add("over_ultralytics", run["ours_loop_over_theirs"],
                f"{run['model']}, sequential detector loop (no service run)")
            continue
        median_ms = run["theirs"].get("ms_per_image_median")
        add("over_ultralytics", ratio(service_ips, theirs),
            f"{run['model']}, service at {top} threads",
            f"burst {_fmt(service_ips)} img/s vs the predictor "
            + (f"{_fmt(median_ms)} ms/image (median of one predict() call per file); "
               if median_ms else f"{_fmt(theirs)} img/s; ")
            + f"same files, sequential detector loop vs predictor: "
            f"{_fmt(run['ours_loop_over_theirs'])}x" + _ultralytics_ceiling(config, theirs))
    return rows


def _ultralytics_ceiling(config: dict[str, Any] | None, theirs: float | None) -> str:
    """What the goal asks for against what the session alone can do here, frames in parallel."""
    ceiling = ((config or {}).get("frames_in_parallel") or {}).get("images_per_s")
    if not ceiling or not theirs:
        return ""
    needed = GOALS["over_ultralytics"][2] * theirs
    return (f"; the goal asks for {_fmt(needed)} img/s, the session alone running frames in "
            f"parallel with nothing else to do reaches {_fmt(ceiling)} img/s here")


def _their_ips(theirs: dict[str, Any]) -> float | None:
    """The predictor's images per second: from the median ms of one predict() call per file
    when the script measured it (a stray slow call does not move it), else the loop's mean."""
    median_ms = theirs.get("ms_per_image_median")
    if median_ms:
        return 1000.0 / float(median_ms)
    value = theirs.get("images_per_s")
    return None if value is None else float(value)


def where_time_goes(config: dict[str, Any]) -> dict[str, Any] | None:
    """Shares of the service's per-image time (its own stage timings during the burst)."""
    burst = (config.get("service") or {}).get("burst")
    if not burst:
        return None
    stages = burst["stages_ms"]
    medians = {s: stages[s]["median_ms"] or 0.0 for s in SERVICE_STAGES if s in stages}
    total = sum(medians.values())
    per_image_ms = 1000 / burst["images_per_s"] if burst.get("images_per_s") else None
    alone = config["raw_session"]["session_ms"]["median_ms"]
    return {
        "stage_median_ms": medians,
        "stage_share": {s: round(v / total, 3) if total else None for s, v in medians.items()},
        "burst_ms_per_image": round(per_image_ms, 2) if per_image_ms else None,
        "session_alone_ms": alone,
        "session_in_service_ms": medians.get("inference"),
        "session_slowdown": ratio(medians.get("inference"), alone),
        "service_cpu_cores": burst.get("service_cpu_cores"),
    }


def render_markdown(doc: dict[str, Any], goals: list[dict[str, Any]], plots: list[str]) -> str:
    m = doc["machine"]
    out = [f"# inspector bench: {doc['host']}, {doc['date']}", ""]
    out.append(f"{m['processor']}, {m['cpu_count']} CPUs, {m['platform']}; Python {m['python']}, "
               f"ONNX Runtime {m['onnxruntime']}, OpenCV {m['opencv']}. Started "
               f"{doc['started_utc']}, took {doc['duration_s']:.0f} s"
               f"{' (--quick: figures are not meaningful)' if doc['quick'] else ''}. Load "
               f"average at the end: {_loadavg(m)}.")
    out.append("")
    out.append("Models: " + "; ".join(
        f"`{x['label']}` ({x['precision']}, input {x['input_size']['width']}x"
        f"{x['input_size']['height']}, {x['size_mb']} MB, sha256 {x['sha256'][:12]})"
        for x in doc["models"]) + ".")
    out += ["", "## Goals", "", "| what | scope | value | goal | met | |",
            "|---|---|---|---|---|---|"]
    for g in goals:
        met = {True: "yes", False: "**no**", None: "n/a"}[g["met"]]
        note = g["shortfall"] + ("; " if g["shortfall"] and g["detail"] else "") + g["detail"]
        out.append(f"| {g['what']} | {g['scope']} | {_fmt(g['value'])} {g['unit']} | "
                   f"{g['op']} {_fmt(g['goal'])} {g['unit']} | {met} | {note} |")
    if not goals:
        out.append("| (nothing graded) | | | | | |")
    out += ["", "## Throughput and latency per configuration", "",
            "Loop: file -> detections "
            "one after another in one thread. Burst: the service (subprocess, Greengrass "
            "emulators) from the first file renamed into its folder to the last result "
            "acknowledged by the nucleus. Single: file closed -> result acknowledged, one image "
            "at a time, 0.3 s apart; 'outside the stages' is what the image's own decode, "
            "preprocess, inference and post-processing do not explain (watcher, queues, sinks, "
            "IPC), also by the verdict of the image before (a defect is held: moved out of the "
            "watched folder). Start-up: process start -> first result (one image waiting).", "",
            "Raw session: `onnxruntime.InferenceSession(path)` with only the intra-op threads "
            "set, as a user writes the loop (the goals' reference). The service runs with its "
            "defaults (InferenceWorkers 1). One worker per core: the same service with "
            "InferenceWorkers 0, burst img/s and single ms, at the highest thread setting.", "",
            "| model | threads | raw session img/s | loop img/s | burst img/s | one worker per "
            "core: burst img/s / single ms | burst/raw | "
            "single ms (median / p95) | single: outside the stages ms (median) | start-up s | "
            "RSS peak / steady MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in doc["configs"]:
        svc = c.get("service") or {}
        burst = svc.get("burst") or {}
        single = svc.get("single_latency_ms") or {}
        startup = svc.get("startup") or {}
        overhead = svc.get("single_overhead_ms") or {}
        out.append(
            f"| {c['model']} | {c['threads']} | {_fmt(c['raw_session']['images_per_s'])} | "
            f"{_fmt(c['detector_loop']['images_per_s'])} | {_fmt(burst.get('images_per_s'))} | "
            f"{_per_core_cell(c.get('per_core_workers'))} | "
            f"{_fmt(c.get('burst_over_raw'))} | {_fmt(single.get('median_ms'))} / "
            f"{_fmt(single.get('p95_ms'))} | {_fmt(overhead.get('median_ms'))}"
            f"{_after_verdict(svc.get('single_overhead_ms_after'))} | "
            f"{_fmt(startup.get('to_first_result_s'))} | "
            f"{_fmt(svc.get('rss_peak_mb'))} / {_fmt(burst.get('rss_steady_mb'))} |"
            + (f" service failed: {svc['error'].splitlines()[0]}" if "error" in svc else ""))
    out += ["", "## Per-stage latency in this process (ms, median / p95)", "",
            "`preprocess` is the one-pass letterbox + tensor the service runs; `letterbox` and "
            "`tensor` are the two-step path, for reference. `publish`: spool, PublishToIoTCore "
            "until acknowledged (nucleus emulator), unspool.", ""]
    names = [f"{c['model']} {c['threads']}t" for c in doc["configs"]]
    out.append("| stage | " + " | ".join(names) + " |")
    out.append("|---" * (len(names) + 1) + "|")
    for stage in (*STAGE_ROWS, "total"):
        cells = [f"{_fmt(c['stages_ms'][stage]['median_ms'])} / "
                 f"{_fmt(c['stages_ms'][stage]['p95_ms'])}" for c in doc["configs"]]
        out.append(f"| {stage} | " + " | ".join(cells) + " |")
    pub = doc.get("publish_ms")
    if pub:
        out.append(f"| publish | {_fmt(pub['median_ms'])} / {_fmt(pub['p95_ms'])} (all) |"
                   + " |" * (len(names) - 1))
    out += ["", "## Where the service's time goes (burst)", "",
            "The service's own per-image stage timings during the burst (medians), their "
            "shares, and how much slower the session ran inside the service than alone.", "",
            "| config | decode | preprocess | inference | postprocess | ms/image (burst) | "
            "session alone ms | in service / alone | CPU cores used |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in doc["configs"]:
        w = where_time_goes(c)
        if w is None:
            continue
        cells = [f"{_fmt(w['stage_median_ms'].get(s))} ({_pct(w['stage_share'].get(s))})"
                 for s in SERVICE_STAGES]
        out.append(f"| {c['model']} {c['threads']}t | " + " | ".join(cells) +
                   f" | {_fmt(w['burst_ms_per_image'])} | {_fmt(w['session_alone_ms'])} | "
                   f"{_fmt(w['session_slowdown'])} | {_fmt(w['service_cpu_cores'])} |")
    memory = [m for m in doc.get("memory") or [] if isinstance(m.get("steps"), list)]
    if memory:
        out += ["", "## Where the memory goes", "",
                "RSS of a fresh process after each import and step, in the order the service "
                "gets there (MB; the increase in brackets).", ""]
        out.append("| step | " + " | ".join(f"{m['model']} {m['threads']}t" for m in memory)
                   + " |")
        out.append("|---" * (len(memory) + 1) + "|")
        for i, step in enumerate(memory[0]["steps"]):
            cells = [f"{_fmt(m['steps'][i]['rss_mb'])} (+{_fmt(m['steps'][i]['delta_mb'])})"
                     if i < len(m["steps"]) else "-" for m in memory]
            out.append(f"| {step['step']} | " + " | ".join(cells) + " |")
    out += ["", "## NMS: ours vs cv2.dnn.NMSBoxes (ms, medians)", "",
            "cv2 is timed from the same numpy xyxy boxes (its xywh conversion counts); "
            "'cv2 lists' from prebuilt Python lists.", "",
            "| boxes | candidates | kept | ours | cv2 | cv2 lists | ours / cv2 | same kept set |",
            "|---|---|---|---|---|---|---|---|"]
    for r in doc["nms"]:
        out.append(f"| {r['boxes']} | {r['candidates']} | {r['kept']} | {_fmt(r['ours_ms'])} | "
                   f"{_fmt(r['cv2_ms'])} | {_fmt(r['cv2_prebuilt_lists_ms'])} | "
                   f"{_fmt(r['ours_over_cv2'])} | {r['same_as_cv2']} |")
    out += ["", "## Ultralytics' predictor", ""]
    ultra = doc["ultralytics"]
    if ultra["status"] != "ran":
        out.append(f"Skipped: {ultra['note']}.")
    else:
        out += [f"`YOLO(onnx, task='detect').predict(path)` on the same ONNX file and the same "
                f"image files, one after another (interpreter: {ultra['note']}); ours: the same "
                "loop over the same files with our detector (both with ONNX Runtime's default "
                "threads).", "",
                "| model | images | Ultralytics ms/image (median / p95) | Ultralytics img/s | "
                "its pre / inference / post ms | our loop img/s | loop ratio |",
                "|---|---|---|---|---|---|---|"]
        for run in ultra["runs"]:
            t = run["theirs"]
            if "error" in t:
                out.append(f"| {run['model']} | {run['images']} | failed: "
                           f"{t['error'].splitlines()[0]} | | | | |")
                continue
            sp = t.get("speed_ms_median", {})
            out.append(f"| {run['model']} | {run['images']} | "
                       f"{_fmt(t.get('ms_per_image_median'))} / "
                       f"{_fmt(t.get('ms_per_image_p95'))} | {_fmt(t['images_per_s'])} | "
                       f"{_fmt(sp.get('preprocess'))} / {_fmt(sp.get('inference'))} / "
                       f"{_fmt(sp.get('postprocess'))} | {_fmt(run['ours_loop']['images_per_s'])}"
                       f" | {_fmt(run['ours_loop_over_theirs'])} |")
        version = next((r["theirs"].get("ultralytics_version") for r in ultra["runs"]
                        if r["theirs"].get("ultralytics_version")), None)
        if version:
            out.append(f"\nUltralytics {version}.")
    soak = doc.get("soak")
    out += ["", "## Soak", ""]
    if not soak:
        out.append("Not run (`--soak N`).")
    elif "error" in soak:
        out.append(f"Failed: {soak['error']}")
    else:
        out.append(f"{soak['images']} images in batches of {soak['batch']} ({soak['model']}, "
                   f"{soak['threads']} threads): start-up to first result "
                   f"{_fmt(soak['startup']['to_first_result_s'])} s, RSS after "
                   f"{_fmt(soak['rss_after_mb'])} MB, growth {_fmt(soak['rss_growth_mb'])} MB "
                   f"({soak['rss_growth_from']}), peak {_fmt(soak['rss_peak_mb'])} MB.")
    sprof = doc.get("service_profile")
    if sprof and "error" not in sprof:
        out += ["", f"## Profile of the service during a burst ({sprof['model']}, "
                f"{sprof['threads']} threads, {sprof['images']} images)", "",
                "A separate service run under cProfile in every Python thread (from just before "
                "the drop to the exit); blocking waits (locks, sleeps, selects, queue gets) are "
                "left out, shares are of the rest. ONNX Runtime's own threads are native: their "
                "work shows as the session's `run` call.", "",
                "| function | calls | own s | share |", "|---|---|---|---|"]
        for row in sprof["top"]:
            out.append(f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} | "
                       f"{_pct(row['own_share'])} |")
    elif sprof:
        out += ["", "## Profile of the service during a burst", "", f"Failed: {sprof['error']}"]
    prof = doc.get("profile")
    if prof:
        out += ["", f"## Profile of the per-image path ({prof['model']}, {prof['threads']} "
                f"threads, {prof['images']} images, sequential, cProfile by own time)", "",
                "| function | calls | own s | share |", "|---|---|---|---|"]
        for row in prof["top"]:
            out.append(f"| `{row['function']}` | {row['calls']} | {row['own_s']:.3f} | "
                       f"{_pct(row['own_share'])} |")
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if doc.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(out) + "\n"


def write_plots(doc: dict[str, Any], out_dir: Path, stem: str) -> tuple[list[Path], str | None]:
    """PNG plots; ([], why) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return [], "plots skipped: matplotlib is not installed (pip install 'inspector[bench]')"
    configs = doc["configs"]
    names = [f"{c['model']} {c['threads']}t" for c in configs]
    paths = []

    stages = [*STAGE_ROWS]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(len(configs), 1)
    for i, c in enumerate(configs):
        med = [c["stages_ms"][s]["median_ms"] or 0 for s in stages]
        p95 = [c["stages_ms"][s]["p95_ms"] or 0 for s in stages]
        xs = [k + i * width for k in range(len(stages))]
        above = [max(b - a, 0) for a, b in zip(med, p95, strict=True)]
        bars = ax.bar(xs, [max(m, FLOOR_MS) for m in med], width, label=names[i],
                      yerr=[[0] * len(med), above], capsize=2)
        ax.bar_label(bars, labels=[_fmt(m) for m in med], fontsize=6, padding=1)
    if doc.get("publish_ms"):
        publish = doc["publish_ms"]["median_ms"] or 0.0
        bars = ax.bar(len(stages), max(publish, FLOOR_MS), width, color="grey", label="publish")
        ax.bar_label(bars, labels=[_fmt(publish)], fontsize=6, padding=1)
    # the session is 10-1000x the other stages: a log axis keeps every stage's bar visible
    ax.set_yscale("log")
    ax.set_xticks([k + width * (len(configs) - 1) / 2 for k in range(len(stages))]
                  + ([len(stages)] if doc.get("publish_ms") else []))
    ax.set_xticklabels(stages + (["publish"] if doc.get("publish_ms") else []))
    ax.set_ylabel("ms per image (median, bar to p95; log scale)")
    ax.set_title(f"Latency per stage, {doc['host']}")
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out_dir / f"{stem}-stages.png", plt))

    fig, ax = plt.subplots(figsize=(10, 5))
    series: list[tuple[str, Callable[[dict[str, Any]], float | None]]] = [
        ("raw session", lambda c: c["raw_session"]["images_per_s"]),
        ("detector loop", lambda c: c["detector_loop"]["images_per_s"]),
        ("service burst", _burst_ips),
    ]
    width = 0.8 / len(series)
    for i, (label, get) in enumerate(series):
        ax.bar([k + i * width for k in range(len(configs))], [get(c) or 0 for c in configs],
               width, label=label)
    for run in doc["ultralytics"].get("runs", []):
        ips = run["theirs"].get("images_per_s")
        if ips:
            ax.axhline(ips, linestyle="--", color="black", linewidth=1)
            ax.text(len(configs) - 0.5, ips, f" Ultralytics {run['model']}", va="bottom",
                    ha="right", fontsize=8)
    ax.set_xticks([k + width for k in range(len(configs))])
    ax.set_xticklabels(names)
    ax.set_ylabel("images per second")
    ax.set_title(f"Throughput per configuration, {doc['host']}")
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out_dir / f"{stem}-throughput.png", plt))

    soak = doc.get("soak")
    if soak and soak.get("points"):
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([p["images"] for p in soak["points"]], [p["rss_mb"] for p in soak["points"]],
                marker=".")
        ax.axhline(200, linestyle="--", color="red", linewidth=1)
        ax.set_xlabel("images inspected")
        ax.set_ylabel("service RSS (MB)")
        ax.set_title("RSS over the soak")
        fig.tight_layout()
        paths.append(_save(fig, out_dir / f"{stem}-soak.png", plt))
    return paths, None


def write_report(doc: dict[str, Any], out_dir: Path, stem: str, *, plots: bool = True
                 ) -> dict[str, Any]:
    """Grade ``doc`` (adds "goals", "plots"), write <stem>.json, <stem>.md and the PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc["goals"] = grade(doc)
    for c in doc["configs"]:
        c["where_time_goes"] = where_time_goes(c)
    png: list[Path] = []
    if plots:
        png, why = write_plots(doc, out_dir, stem)
        if why:
            doc["notes"].append(why)
    doc["plots"] = [p.name for p in png]
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(render_markdown(doc, doc["goals"], doc["plots"]))
    return {"json": json_path, "markdown": md_path, "plots": png}


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _burst_ips(config: dict[str, Any] | None) -> float | None:
    if not config:
        return None
    return ((config.get("service") or {}).get("burst") or {}).get("images_per_s")


def _first(configs: list[dict[str, Any]], precision: str, threads: int) -> dict[str, Any] | None:
    return next((c for c in configs if c["precision"] == precision and c["threads"] == threads),
                None)


def _burst_detail(config: dict[str, Any]) -> str:
    w = where_time_goes(config)
    if w is None:
        return ""
    ceiling = config.get("frames_in_parallel_over_raw")
    per_core = config.get("per_core_workers") or {}
    return (f"burst {_fmt(w['burst_ms_per_image'])} ms/image vs session alone "
            f"{_fmt(w['session_alone_ms'])} ms; in the service the session took "
            f"{_fmt(w['session_in_service_ms'])} ms ({_fmt(w['session_slowdown'])}x), decode "
            f"{_fmt(w['stage_median_ms'].get('decode'))} ms + preprocess "
            f"{_fmt(w['stage_median_ms'].get('preprocess'))} ms beside it; service used "
            f"{_fmt(w['service_cpu_cores'])} CPU cores"
            + (f"; one inference worker per core: {_fmt(per_core['images_per_s'])} img/s "
               f"({_fmt(config.get('per_core_over_default'))}x)"
               if per_core.get("images_per_s") else "")
            + (f"; ceiling on this machine: the session alone running "
               f"{config['frames_in_parallel']['workers']} frames at once (one thread each, "
               f"nothing else to do) reaches {_fmt(ceiling)}x the raw loop"
               if ceiling is not None else ""))


def _single_detail(config: dict[str, Any]) -> str:
    svc = config.get("service") or {}
    single = (svc.get("single_latency_ms") or {}).get("median_ms")
    outside = (svc.get("single_overhead_ms") or {}).get("median_ms")
    if single is None:
        return ""
    own = None if outside is None else single - outside
    alone = config["raw_session"]["session_ms"]["median_ms"]
    stages = config.get("stages_ms") or {}
    fixed = sum((stages.get(s) or {}).get("median_ms") or 0.0
                for s in ("decode", "preprocess", "postprocess"))
    floor = ratio(alone + fixed, alone) if stages else None
    return (f"single {_fmt(single)} ms vs session alone {_fmt(alone)} ms; the image's own "
            f"stages {_fmt(own)} ms, outside them (watcher, queues, sinks, IPC) {_fmt(outside)} ms"
            + (f"; floor on this machine: decode + preprocess + post-processing alone take "
               f"{_fmt(fixed)} ms in this process, so even with the session at its raw speed "
               f"and nothing outside the stages the ratio is {_fmt(floor)}x"
               if floor is not None else ""))


def _per_core_cell(run: dict[str, Any] | None) -> str:
    if not run or run.get("images_per_s") is None:
        return "-"
    return (f"{_fmt(run['images_per_s'])} / "
            f"{_fmt((run.get('single_latency_ms') or {}).get('median_ms'))}")


def _after_verdict(summaries: dict[str, Any] | None) -> str:
    """" (after a defect 180, after a pass 4.1)": medians by the previous image's verdict."""
    if not summaries:
        return ""
    return " (" + ", ".join(f"after a {v} {_fmt(s['median_ms'])}" for v, s in summaries.items()
                            if v != "none") + ")"


def _memory_detail(doc: dict[str, Any], model: str) -> str:
    entry = next((m for m in doc.get("memory") or [] if m.get("model") == model
                  and isinstance(m.get("steps"), list)), None)
    if entry is None:
        return ""
    biggest = sorted(entry["steps"], key=lambda s: s["delta_mb"], reverse=True)[:3]
    return "largest parts: " + ", ".join(f"{s['step']} +{_fmt(s['delta_mb'])} MB"
                                         for s in biggest)


def _shortfall(value: float | None, op: str, goal: float) -> str:
    if value is None:
        return "not measured"
    if (op == ">=" and value >= goal) or (op == "<=" and value <= goal):
        return ""
    if goal == 0:
        return "missed"
    off = abs(value - goal) / goal
    return f"missed by {off:.1%} ({'short of' if op == '>=' else 'over'} the goal)"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _loadavg(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_at_end")
    return "-" if not load else " / ".join(f"{x:.2f}" for x in load)
