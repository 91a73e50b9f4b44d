"""Result schema v1: the one JSON object per image for MQTT, JSONL files and ``predict --json``.

The JSON Schema ships as ``inspector/schemas/result-1.json`` (``load_schema``). Floats are rounded
to what is meaningful: boxes to 0.1 px, confidences to 4 decimals, milliseconds to 0.01.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from inspector import RESULT_SCHEMA
from inspector.types import Inspection

OPTIONAL_KEYS = ("repeat", "detections_truncated", "detections_total")  # besides ``device``
SCHEMA_RESOURCE = "result-1.json"


def to_result(inspection: Inspection, *, device: str | None = None, **extra: Any) -> dict[str, Any]:
    """The schema v1 object of ``inspection``.

    ``device`` and the keyword ``extra`` keys (only those the schema allows: ``repeat``,
    ``detections_truncated``, ``detections_total``) are added when given; anything else is a
    TypeError, since the schema forbids unknown keys.
    """
    unknown = sorted(set(extra) - set(OPTIONAL_KEYS))
    if unknown:
        raise TypeError(f"to_result: keys not in {RESULT_SCHEMA}: {', '.join(unknown)}")
    det = inspection.detections
    names = inspection.model.class_names
    detections = [
        {
            "class_id": int(k),
            "label": names[k] if 0 <= k < len(names) else str(k),
            "confidence": round(float(c), 4),
            "box": [round(float(v), 1) for v in box],
        }
        for box, c, k in zip(det.xyxy, det.confidence, det.class_id.tolist(), strict=True)
    ]
    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "image": {
            "name": inspection.image.name,
            "width": inspection.image.size.width,
            "height": inspection.image.size.height,
            "sha256": inspection.image.sha256,
        },
        "model": {
            "name": inspection.model.name,
            "version": inspection.model.version,
            "sha256": inspection.model.sha256,
        },
        "time": inspection.time_utc,
        "verdict": inspection.verdict,
        "detections": detections,
        "timings_ms": {k: round(float(v), 2) for k, v in inspection.timings_ms.items()},
        # optional in the schema (added later): the best score even when no box passed
        "best_confidence": round(inspection.best_confidence, 4),
    }
    if device is not None:
        result["device"] = device
    for key in OPTIONAL_KEYS:
        if key in extra:
            result[key] = extra[key]
    return result


def to_json(result: dict[str, Any]) -> str:
    """One compact line (for JSONL and MQTT payloads)."""
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@cache
def load_schema() -> dict[str, Any]:
    """The shipped JSON Schema (draft 2020-12) of result v1."""
    text = (resources.files("inspector") / "schemas" / SCHEMA_RESOURCE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
