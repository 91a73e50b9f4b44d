#!/usr/bin/env bash
# Regenerate the bundled model from nothing, in one command (needs the `train` extra: torch,
# ultralytics; never run on a device or in CI):
#
#   python3 -m venv .venv-train && .venv-train/bin/pip install -e '.[train,test]'
#   PY=.venv-train/bin/python scripts/make_model.sh
#
# Steps: synthetic data (two mixes, shared/DOMAIN.md) -> 320 px same-scale crops -> YOLOv8n from
# yolov8n.yaml (no pretrained weights, offline; stage 1, TRAIN_HOURS) -> the same crops again from
# stage 1's best weights with AdamW at lr 0.001 (stage 2, CONTINUE_HOURS; 0 skips it) -> ONNX
# fp32 640x640 (DFL decode rewritten, same outputs) -> INT8 (static QDQ) -> evaluation by our own
# pipeline on a held-out seed -> models/manifest.json. The defaults reproduce the bundled model
# (about 3.3 h on 2 CPU cores; minutes on a GPU with DEVICE=0). Every seed and setting is recorded
# in the manifest. Optional FINETUNE_HOURS > 0 adds a last stage on whole 640 px frames.
#
# Only re-export, quantize, evaluate and write the manifest from weights you already have:
#   WEIGHTS=runs/crops320b/weights/best.pt TRAINING="runs/crops320/inspector_train.json \
#     runs/crops320b/inspector_train.json" scripts/make_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
DATA=${DATA:-data}
RUNS=${RUNS:-runs}
TRAIN_HOURS=${TRAIN_HOURS:-1.75}
CONTINUE_HOURS=${CONTINUE_HOURS:-1.5}
FINETUNE_HOURS=${FINETUNE_HOURS:-0}
EPOCHS=${EPOCHS:-14}
VERSION=${VERSION:-1.1.0}
IMGSZ=${IMGSZ:-640}
DEVICE=${DEVICE:-cpu}
EVAL_COUNT=${EVAL_COUNT:-300}
export ORT_DISABLE_TELEMETRY=1

if [[ -n "${WEIGHTS:-}" ]]; then
  weights=$WEIGHTS
  read -r -a records <<< "${TRAINING:?TRAINING: the inspector_train.json of each stage behind WEIGHTS}"
else
  "$PY" scripts/make_dataset.py "$DATA/trainA" --count 1100 --seed 1 --val-fraction 0.05 \
    --workers 2 --max-side 640 --p-clean 0.15 --max-scratches 5
  "$PY" scripts/make_dataset.py "$DATA/trainB" --count 400 --seed 2 --val-fraction 0.0 \
    --workers 2 --max-side 640 --p-clean 0.1 --max-scratches 5 --contrast-scale 1.4 --width-scale 1.25
  "$PY" scripts/make_crops.py "$DATA/trainA" "$DATA/trainB" --out "$DATA/crops320" --size 320 \
    --per-image 3

  "$PY" scripts/train.py --data "$DATA/crops320/data.yaml" --imgsz 320 --epochs "$EPOCHS" \
    --time "$TRAIN_HOURS" --batch 16 --project "$RUNS" --name crops320 --close-mosaic 2 \
    --device "$DEVICE"
  weights="$RUNS/crops320/weights/best.pt"
  records=("$RUNS/crops320/inspector_train.json")
  if awk "BEGIN { exit !($CONTINUE_HOURS > 0) }"; then
    "$PY" scripts/train.py --data "$DATA/crops320/data.yaml" --weights "$weights" --imgsz 320 \
      --epochs "$EPOCHS" --time "$CONTINUE_HOURS" --batch 16 --project "$RUNS" --name crops320b \
      --close-mosaic 2 --optimizer AdamW --lr0 0.001 --warmup-epochs 0.5 --device "$DEVICE"
    weights="$RUNS/crops320b/weights/best.pt"
    records+=("$RUNS/crops320b/inspector_train.json")
  fi
  if awk "BEGIN { exit !($FINETUNE_HOURS > 0) }"; then
    "$PY" scripts/train.py --data "$DATA/trainA/data.yaml" --weights "$weights" --imgsz 640 \
      --epochs 3 --time "$FINETUNE_HOURS" --batch 16 --project "$RUNS" --name full640 \
      --close-mosaic 1 --optimizer AdamW --lr0 0.0005 --warmup-epochs 0.5 --device "$DEVICE"
    weights="$RUNS/full640/weights/best.pt"
    records+=("$RUNS/full640/inspector_train.json")
  fi
fi

"$PY" scripts/export_model.py "$weights" models/scratch-yolov8n.onnx --imgsz "$IMGSZ" \
  --name scratch-yolov8n --version "$VERSION"
"$PY" scripts/quantize_model.py models/scratch-yolov8n.onnx models/scratch-yolov8n-int8.onnx
"$PY" scripts/evaluate.py --count "$EVAL_COUNT" --out models/eval.json \
  --models models/scratch-yolov8n.onnx models/scratch-yolov8n-int8.onnx
"$PY" scripts/write_manifest.py --models-dir models --version "$VERSION" \
  --fp32 scratch-yolov8n.onnx --int8 scratch-yolov8n-int8.onnx \
  --data "$DATA/trainA/synth.json" "$DATA/trainB/synth.json" \
  --training "${records[@]}" --eval models/eval.json --notes "${NOTES:-}"
