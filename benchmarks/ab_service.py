"""A/B of the service's single-image latency and burst throughput between two source trees.

    PYTHONPATH=src python benchmarks/ab_service.py --a /tmp/base/src --b src --rounds 3 \
        --singles 15 --burst 60 [--model models/x.onnx] [--threads 2] [--workers 0]

Each round starts one service per variant (Greengrass emulators, ``inspector.bench.service``),
the order alternating from round to round, and measures single images (file closed -> result
received by the nucleus) and one burst; the report is the median over the rounds of each
round's median, so a background load that comes and goes hits both variants alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from inspector.bench import service
from inspector.bench.images import make_pool


def one_run(src: str, work: Path, model: Path, threads: int, workers: int | None, pool,
            singles: int, burst: int, env_extra: dict[str, str] | None = None) -> dict:
    env = {"PYTHONPATH": str(Path(src).resolve()), **(env_extra or {})}
    with service.running(work, model, threads, pool.path(0), workers=workers,
                         extra_env=env) as svc:
        svc.startup()
        out = {}
        if singles:
            lat = svc.single_latency(pool, singles, pause_s=0.2)
            out["single_ms"] = statistics.median(x for x, _, _ in lat)
            out["single_outside_ms"] = statistics.median(x - own for x, own, _ in lat)
            out["single_own_ms"] = statistics.median(own for _, own, _ in lat)
            timings = [r["timings_ms"] for _, r in svc.results()[-singles:]]
            out["single_stages_ms"] = {k: statistics.median(t[k] for t in timings)
                                       for k in ("decode", "preprocess", "inference")}
        if burst:
            b = svc.burst(pool, work / "staging", burst, "burst")
            out["burst_img_s"] = b["images_per_s"]
            out["burst_rss_peak_mb"] = b["rss_peak_mb"]
            out["burst_cpu_ms_per_image"] = round(1000 * b["service_cpu_s"] / burst, 2)
            out["burst_stages_ms"] = {k: v.get("median_ms") for k, v in b["stages_ms"].items()
                                      if isinstance(v, dict)}
        out["rss_peak_mb"] = service.mb(svc.rss.peak())
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None,
                        help="InferenceWorkers (0 = one per core); default: the component's")
    parser.add_argument("--workers-b", type=int, default=None,
                        help="InferenceWorkers of B, when it differs from --workers")
    parser.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for B's service (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=15)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--pool", type=int, default=12)
    args = parser.parse_args()
    if args.model is None:
        from inspector.models import default_model_path

        args.model = default_model_path(precision="fp32")
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp:
        work = Path(tmp)
        pool = make_pool(work / "pool", args.pool)
        runs: dict[str, list[dict]] = {"A": [], "B": []}
        for r in range(args.rounds):
            workers_b = args.workers if args.workers_b is None else args.workers_b
            b_env = dict(item.split("=", 1) for item in args.b_env)
            order = [("A", args.a, args.workers, {}), ("B", args.b, workers_b, b_env)]
            if r % 2:
                order.reverse()
            for name, src, workers, env in order:
                got = one_run(src, work / f"{name}-{r}", args.model, args.threads,
                              workers, pool, args.singles, args.burst, env)
                runs[name].append(got)
                print(name, r, json.dumps(got), flush=True)
                time.sleep(0.5)
        for name in ("A", "B"):
            keys = [k for k in runs[name][0] if not isinstance(runs[name][0][k], dict)]
            med = {k: round(statistics.median(r[k] for r in runs[name]), 2) for k in keys}
            for part in ("single_stages_ms", "burst_stages_ms"):
                if part in runs[name][0]:
                    med[part] = {k: round(statistics.median(r[part][k] for r in runs[name]), 2)
                                 for k in runs[name][0][part]}
            print(f"median {name} ({args.a if name == 'A' else args.b}):", json.dumps(med))


if __name__ == "__main__":
    main()
