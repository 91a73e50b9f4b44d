#!/usr/bin/env python3
"""Compare a candidate model's evaluation with the current one's; refuse a worse candidate.

Both files are written by ``scripts/evaluate.py --set domain ood`` (same seeds, same count):

    python scripts/model_gate.py --candidate build/model-1.3.0/eval.json \
        --current models/eval.json --files scratch-yolov8n.onnx scratch-yolov8n-int8.onnx

or both models in one evaluation (what scripts/train_robust.sh does), told apart by file name:

    python scripts/model_gate.py --candidate out/eval.json --current out/eval.json \
        --files scratch-yolov8n.onnx --current-files previous-scratch-yolov8n.onnx

For each model file, the candidate must not be lower than the current model on any set in any of
``--metrics`` (by more than ``--tolerance``; ``inspector.evaluation.gate``). It also reports the
quality targets of issue 14 (OOD mAP50 >= 0.92 and within 0.03 of in-distribution, image recall
>= 0.99 at image precision >= 0.98, INT8 mAP50 within 0.01 of fp32); ``--require-targets`` makes
a missed target refuse too. Exit codes: 0 accepted, 2 bad input, 3 refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_ACCEPTED, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 2, 3


def per_set(evaluation: dict[str, Any], file: str) -> dict[str, dict[str, Any]]:
    """{set name: the row of ``file``} of one evaluate.py JSON (old single-set files too)."""
    sets = evaluation.get("sets") or {
        evaluation.get("set", "domain"): {"seed": evaluation.get("seed"),
                                          "count": evaluation.get("count"),
                                          "results": evaluation.get("results", [])}
    }
    out = {}
    for name, block in sets.items():
        for row in block.get("results", []):
            if row.get("model") == file:
                out[name] = {**row, "seed": block.get("seed"), "count": block.get("count")}
    return out


def comparable(candidate: dict[str, dict], current: dict[str, dict]) -> list[str]:
    """Sets evaluated on different images cannot be compared."""
    return [
        f"{name}: seed/count differ (candidate {candidate[name]['seed']}/"
        f"{candidate[name]['count']}, current {current[name]['seed']}/{current[name]['count']})"
        for name in sorted(set(candidate) & set(current))
        if (candidate[name]["seed"], candidate[name]["count"])
        != (current[name]["seed"], current[name]["count"])
    ]


def targets(rows: dict[str, dict[str, dict]], fp32: str, int8: str | None) -> list[str]:
    """Issue 14's targets that ``rows`` ({file: {set: row}}) misses, one line each."""
    missed = []
    sets = rows.get(fp32, {})
    domain, ood = sets.get("domain"), sets.get("ood")
    if ood is None or domain is None:
        return ["targets need both the domain and the ood set"]
    if ood["map50"] < 0.92:
        missed.append(f"OOD mAP50 {ood['map50']:.4f} < 0.92 (short by {0.92 - ood['map50']:.4f})")
    if domain["map50"] - ood["map50"] > 0.03:
        missed.append(f"OOD mAP50 {domain['map50'] - ood['map50']:.4f} below in-distribution "
                      "(target: within 0.03)")
    for name, row in (("domain", domain), ("ood", ood)):
        if row["image_recall"] < 0.99 or row["image_precision"] < 0.98:
            missed.append(f"{name}: image recall {row['image_recall']:.4f} at precision "
                          f"{row['image_precision']:.4f} (target >= 0.99 at >= 0.98)")
    if int8:
        for name in ("domain", "ood"):
            q = rows.get(int8, {}).get(name)
            if q is not None and sets[name]["map50"] - q["map50"] > 0.01:
                missed.append(f"{name}: INT8 mAP50 {q['map50']:.4f} more than 0.01 below fp32 "
                              f"{sets[name]['map50']:.4f}")
    return missed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", type=Path, required=True, help="evaluate.py JSON")
    p.add_argument("--current", type=Path, required=True, help="evaluate.py JSON")
    p.add_argument("--files", nargs="+", default=["scratch-yolov8n.onnx",
                                                  "scratch-yolov8n-int8.onnx"],
                   help="model file names to compare (first: fp32, second: INT8)")
    p.add_argument("--current-files", nargs="+",
                   help="the current model's file names in --current (default: --files)")
    p.add_argument("--metrics", nargs="+", default=["map50", "image_recall"])
    p.add_argument("--tolerance", type=float, default=0.0)
    p.add_argument("--require-targets", action="store_true")
    p.add_argument("--out", type=Path, help="write the decision as JSON here")
    args = p.parse_args(argv)
    from inspector.evaluation import gate

    try:
        candidate = json.loads(args.candidate.read_text())
        current = json.loads(args.current.read_text())
    except (OSError, ValueError) as exc:
        print(f"model_gate: cannot read the evaluations: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    current_files = args.current_files or args.files
    if len(current_files) != len(args.files):
        print("model_gate: --current-files must name as many files as --files", file=sys.stderr)
        return EXIT_BAD_INPUT
    reasons: list[str] = []
    rows: dict[str, dict[str, dict]] = {}
    for file, current_file in zip(args.files, current_files, strict=True):
        new, old = per_set(candidate, file), per_set(current, current_file)
        if not new or not old:
            reasons.append(f"{file} / {current_file}: not in both evaluations")
            continue
        rows[file] = new
        reasons += [f"{file} {r}" for r in comparable(new, old)]
        reasons += [f"{file} {r}" for r in gate(new, old, args.metrics, args.tolerance)]
    missed = targets(rows, args.files[0], args.files[1] if len(args.files) > 1 else None)
    if args.require_targets:
        reasons += [f"target missed: {m}" for m in missed]
    decision = {"accepted": not reasons, "reasons": reasons, "targets_missed": missed}
    if args.out:
        args.out.write_text(json.dumps(decision, indent=2) + "\n")
    for line in missed:
        print(f"target missed: {line}")
    if reasons:
        print(f"REFUSED: {args.candidate} is worse than {args.current}:", file=sys.stderr)
        for reason in reasons:
            print(f"  {reason}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"ACCEPTED: {args.candidate} is at least as good as {args.current} on every set"
          + ("" if missed else "; every target met"))
    return EXIT_ACCEPTED


if __name__ == "__main__":
    sys.exit(main())
