"""A/B of the standalone service's RSS over a soak (AnnotateOutbox on: the default settings).

    PYTHONPATH=src python benchmarks/ab_soak.py --a /tmp/base/src --b src --images 400 --rounds 2
        [--b-setting AnnotateOutbox=false]

Each round runs one service per variant (order alternating), feeds ``--images`` in batches of
``--batch`` (renamed in at once) and reports the RSS peak, the settled RSS after the last batch,
and when the peak happened (which batch), with the medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import yaml

from inspector.bench import service
from inspector.bench.images import make_pool


def setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", type=int, default=12)
    parser.add_argument("--a-setting", type=setting, action="append", default=[])
    parser.add_argument("--b-setting", type=setting, action="append", default=[])
    parser.add_argument("--b-env", type=setting, action="append", default=[],
                        help="NAME=VALUE in B's environment (e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()
    if args.model is None:
        from inspector.models import default_model_path

        args.model = default_model_path(precision="fp32")
    out: dict[str, list[dict]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="ab-soak-") as tmp:
        work = Path(tmp)
        pool = make_pool(work / "pool", args.pool)
        for r in range(args.rounds):
            order = [("A", args.a, dict(args.a_setting), {}),
                     ("B", args.b, dict(args.b_setting), {k: str(v) for k, v in args.b_env})]
            if r % 2:
                order.reverse()
            for name, src, settings, env in order:
                run = work / f"{name}-{r}"
                saved = dict(os.environ)
                os.environ.update(env, PYTHONPATH=str(Path(src).resolve()))
                try:
                    with service.running_standalone(run, args.model, pool.path(0),
                                                    **settings) as svc:
                        svc.startup()
                        got = svc.soak(pool, run / "staging", args.images, args.batch)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                peaks = [p["rss_mb"] for p in got["points"]]
                row = {"peak_mb": got["rss_peak_mb"], "after_mb": got["rss_after_mb"],
                       "settled_mb": peaks}
                out[name].append(row)
                print(name, r, json.dumps(row), flush=True)
    for name in ("A", "B"):
        print(f"median {name}: peak {statistics.median(r['peak_mb'] for r in out[name]):.1f} MB,"
              f" after {statistics.median(r['after_mb'] for r in out[name]):.1f} MB")


if __name__ == "__main__":
    main()
