#!/usr/bin/env bash
# Model 1.3.0, trained for robustness, in ONE command (needs the `train` extra: torch,
# ultralytics; never on a device or in CI):
#
#   python3 -m venv .venv-train && .venv-train/bin/pip install -e '.[train,test]'
#   DEVICE=0 WORKERS=16 PY=.venv-train/bin/python scripts/train_robust.sh        # GPU
#   PY=.venv-train/bin/python nice scripts/train_robust.sh                        # CPU: hours
#
# What it does (docs/model-loop.md):
#   1. data: ROBUST_COUNT frames of the `randomized` rendering (seed 41: domain randomization,
#      more short scratches, ranges wider than docs/data-spec.md's, never the `ood` families) plus
#      DOMAIN_COUNT docs/data-spec.md frames (seed 42) so in-distribution quality is kept; 640 px.
#   2. training: from BASE_WEIGHTS (default models/scratch-yolov8n.pt) when that file exists;
#      else from the current model rebuilt from its ONNX export (scripts/onnx_to_weights.py:
#      1.2.0's .pt was not kept; RECOVER=0 skips this); else from yolov8n.yaml with a first
#      stage on 320 px same-scale crops (CROPS_EPOCHS). Then stage A (AdamW, EPOCHS_A, box loss gain 9 for IoU 0.5-0.95
#      quality, perspective/shear/saturation jitter) and stage B (lower LR, EPOCHS_B).
#   3. export (ONNX fp32 640) -> INT8 -> evaluation on the domain AND ood test sets (the seeds of
#      scripts/evaluate.py) -> manifest, all in OUT (default build/model-VERSION/), plus the
#      .pt the ONNX came from (the next fine-tune starts there).
#   4. the gate (scripts/model_gate.py): the current models/ are evaluated on the same images
#      (previous-*.onnx in the report, side by side); a candidate worse on either set, fp32 or
#      INT8, is refused (exit 3). PUBLISH=1 then copies an accepted candidate into models/
#      (ONNX, .pt, manifest, eval.json/.md with both versions side by side).
#
# Every setting below is an environment variable; a tiny smoke run of the whole chain:
#   ROBUST_COUNT=48 DOMAIN_COUNT=16 CROPS_EPOCHS=1 EPOCHS_A=1 EPOCHS_B=0 EVAL_COUNT=8 \
#     BATCH=8 OUT=/tmp/robust-smoke PY=.venv-train/bin/python scripts/train_robust.sh
# (its candidate will be refused by the gate, exit 3, which is the point of the gate).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
RUN_PY=${RUN_PY:-$PY}          # quantize/evaluate/manifest/gate: the devices' ONNX Runtime
VERSION=${VERSION:-1.3.0}
DATA=${DATA:-data}
RUNS=${RUNS:-runs}
OUT=${OUT:-build/model-$VERSION}
MODELS=${MODELS:-models}        # the current (bundled) models, and where PUBLISH=1 copies to
BASE_WEIGHTS=${BASE_WEIGHTS:-$MODELS/scratch-yolov8n.pt}
ROBUST_COUNT=${ROBUST_COUNT:-8000}
DOMAIN_COUNT=${DOMAIN_COUNT:-2000}
CROPS_EPOCHS=${CROPS_EPOCHS:-30}  # only without BASE_WEIGHTS
EPOCHS_A=${EPOCHS_A:-40}
EPOCHS_B=${EPOCHS_B:-20}
BATCH=${BATCH:-64}
WORKERS=${WORKERS:-2}
DEVICE=${DEVICE:-cpu}
IMGSZ=${IMGSZ:-640}
EVAL_COUNT=${EVAL_COUNT:-300}
LR_A=${LR_A:-}                  # stage A learning rate (default 0.0007 from base weights, else 0.001)
WARMUP_A=${WARMUP_A:-1}        # stage A warm-up epochs (0 keeps a fine-tune from jolting good weights)
PUBLISH=${PUBLISH:-0}
RECOVER=${RECOVER:-1}          # no BASE_WEIGHTS: rebuild them from $MODELS/scratch-yolov8n.onnx
export ORT_DISABLE_TELEMETRY=1
mkdir -p "$OUT"
echo "train_robust: VERSION=$VERSION DEVICE=$DEVICE OUT=$OUT BASE_WEIGHTS=$BASE_WEIGHTS" \
  "ROBUST_COUNT=$ROBUST_COUNT DOMAIN_COUNT=$DOMAIN_COUNT EPOCHS_A=$EPOCHS_A EPOCHS_B=$EPOCHS_B"

# 1. data
"$PY" scripts/make_dataset.py "$DATA/robust640" --count "$ROBUST_COUNT" --seed 41 \
  --profile randomized --val-fraction 0.03 --workers "$WORKERS" --max-side 640 \
  --p-clean 0.15 --max-scratches 6
"$PY" scripts/make_dataset.py "$DATA/domain640" --count "$DOMAIN_COUNT" --seed 42 \
  --val-fraction 0.05 --workers "$WORKERS" --max-side 640 --p-clean 0.15 --max-scratches 5
mix="$DATA/robust-mix.yaml"
data_abs=$(cd "$DATA" && pwd)
cat > "$mix" <<EOF
train:
  - $data_abs/robust640/images/train
  - $data_abs/domain640/images/train
val:
  - $data_abs/robust640/images/val
  - $data_abs/domain640/images/val
names:
  0: scratch
EOF
data_sets=("$DATA/robust640/synth.json" "$DATA/domain640/synth.json")

# 2. training; stage NAME DATA_YAML IMGSZ EPOCHS BATCH [train.py flags]: from the previous
# stage's best weights (none: from yolov8n.yaml), which the next stage then starts from
weights=""
records=()
stage() {
  "$PY" scripts/train.py --data "$2" ${weights:+--weights "$weights"} --imgsz "$3" \
    --epochs "$4" --batch "$5" --workers "$WORKERS" --project "$RUNS" --name "$1" \
    --device "$DEVICE" "${@:6}"
  weights="$RUNS/$1/weights/best.pt"
  records+=("$RUNS/$1/inspector_train.json")
}
robust=(--box 9.0 --hsv-s 0.5 --hsv-v 0.4 --degrees 10 --shear 2.0 --perspective 0.0005
        --scale 0.3 --close-mosaic 3 --optimizer AdamW)
if [[ ! -f "$BASE_WEIGHTS" && "$RECOVER" == 1 && -f "$MODELS/scratch-yolov8n.onnx" ]]; then
  # the current model's .pt was not kept: rebuild it from its ONNX export (checked to compute
  # the same outputs before it is written), its BatchNorms calibrated on the training images so
  # that training mode starts from the same function
  "$PY" scripts/onnx_to_weights.py "$MODELS/scratch-yolov8n.onnx" "$OUT/base-from-onnx.pt" \
    --calibrate "$DATA/domain640/images/train" "$DATA/robust640/images/train"
  BASE_WEIGHTS="$OUT/base-from-onnx.pt"
fi
if [[ -f "$BASE_WEIGHTS" ]]; then
  weights=$BASE_WEIGHTS
  lr_a=${LR_A:-0.0007}
else
  echo "train_robust: no $BASE_WEIGHTS: training from yolov8n.yaml (crops stage first)"
  "$PY" scripts/make_crops.py "$DATA/robust640" "$DATA/domain640" --out "$DATA/robust-crops320" \
    --size 320 --per-image 3
  stage robust-crops320 "$DATA/robust-crops320/data.yaml" 320 "$CROPS_EPOCHS" "$BATCH" \
    --close-mosaic 2
  lr_a=${LR_A:-0.001}
fi
if (( EPOCHS_A > 0 )); then
  stage robust-a "$mix" "$IMGSZ" "$EPOCHS_A" "$BATCH" "${robust[@]}" --lr0 "$lr_a" \
    --warmup-epochs "$WARMUP_A" --cos-lr
fi
if (( EPOCHS_B > 0 )); then
  stage robust-b "$mix" "$IMGSZ" "$EPOCHS_B" "$BATCH" "${robust[@]}" --lr0 0.0003 \
    --warmup-epochs 0.3
fi
if [[ -z "$weights" || "$weights" == "$BASE_WEIGHTS" ]]; then
  echo "train_robust: no training stage ran (EPOCHS_A=EPOCHS_B=0 with base weights)" >&2
  exit 2
fi

# 3. export, INT8, manifest; evaluation of the candidate AND the current models/ (as
# previous-*.onnx) on the same domain and ood images: one report, side by side
cp "$weights" "$OUT/scratch-yolov8n.pt"
"$PY" scripts/export_model.py "$weights" "$OUT/scratch-yolov8n.onnx" --imgsz "$IMGSZ" \
  --name scratch-yolov8n --version "$VERSION"
"$RUN_PY" scripts/quantize_model.py "$OUT/scratch-yolov8n.onnx" "$OUT/scratch-yolov8n-int8.onnx"
cp "$MODELS/scratch-yolov8n.onnx" "$OUT/previous-scratch-yolov8n.onnx"
cp "$MODELS/scratch-yolov8n-int8.onnx" "$OUT/previous-scratch-yolov8n-int8.onnx"
"$RUN_PY" scripts/evaluate.py --count "$EVAL_COUNT" --set domain ood --out "$OUT/eval.json" \
  --models "$OUT/previous-scratch-yolov8n.onnx" "$OUT/previous-scratch-yolov8n-int8.onnx" \
  "$OUT/scratch-yolov8n.onnx" "$OUT/scratch-yolov8n-int8.onnx"
"$RUN_PY" scripts/write_manifest.py --models-dir "$OUT" --version "$VERSION" \
  --fp32 scratch-yolov8n.onnx --int8 scratch-yolov8n-int8.onnx --data "${data_sets[@]}" \
  --training "${records[@]}" --eval "$OUT/eval.json" \
  --notes "${NOTES:-robust training (scripts/train_robust.sh): randomized + docs/data-spec.md data}"

# 4. the gate: worse than the current model on either set (fp32 or INT8) -> refused, exit 3
set +e
"$RUN_PY" scripts/model_gate.py --candidate "$OUT/eval.json" --current "$OUT/eval.json" \
  --files scratch-yolov8n.onnx scratch-yolov8n-int8.onnx \
  --current-files previous-scratch-yolov8n.onnx previous-scratch-yolov8n-int8.onnx \
  --out "$OUT/gate.json"
verdict=$?
set -e
if (( verdict != 0 )); then
  echo "train_robust: candidate $VERSION in $OUT NOT published (gate: $OUT/gate.json)" >&2
  exit "$verdict"
fi
if [[ "$PUBLISH" == 1 ]]; then
  cp "$OUT"/scratch-yolov8n.onnx "$OUT"/scratch-yolov8n-int8.onnx "$OUT"/scratch-yolov8n.pt \
    "$OUT"/manifest.json "$OUT"/eval.json "$OUT"/eval.md "$MODELS/"
  echo "train_robust: published $VERSION into $MODELS/ (then re-run the benchmark)"
else
  echo "train_robust: candidate $VERSION accepted in $OUT (PUBLISH=1 copies it into $MODELS/)"
fi
