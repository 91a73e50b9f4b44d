#!/usr/bin/env bash
# The installed package works, not just the checkout: build the wheel, install it (not editable)
# into a fresh virtual environment, and run `inspector --version` and `inspector predict` on a
# generated image with the bundled model. CI runs this (.ci/run).
#
# Kept fast and offline: the new environment gets the package alone (--no-deps, --no-index) and
# borrows the dependencies already installed in the project's environment through a .pth line
# (a path added that way does not run that environment's own .pth files, so the editable install
# of the checkout stays out of it).
#
# usage: scripts/check_wheel.sh [PYTHON]      (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${1:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# build from a copy of the checkout's files: an in-place build would reuse build/lib, where a
# module deleted since the last build still sits and would be shipped
source_dir=.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  source_dir="$tmp/source"
  mkdir "$source_dir"
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | xargs -0 cp --parents -t "$source_dir"
fi
"$PY" -m pip wheel -q --no-deps -w "$tmp/dist" "$source_dir" >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log" >&2; echo "check_wheel: the wheel does not build" >&2; exit 1; }
wheel=$(ls "$tmp"/dist/inspector-*.whl)
echo "check_wheel: built $(basename "$wheel") ($(( $(stat -c %s "$wheel") / 1048576 )) MiB)"

"$PY" -m venv --without-pip "$tmp/venv"
"$PY" -m pip --python "$tmp/venv/bin/python" install -q --no-deps --no-index "$wheel"
borrowed=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
new_site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$borrowed" > "$new_site/borrowed-dependencies.pth"

cd "$tmp"  # nothing of the checkout on the path
unset INSPECTOR_MODELS_DIR
where=$(venv/bin/python -c 'import inspector; print(inspector.__file__)')
case "$where" in
  "$new_site"/*) ;;
  *) echo "check_wheel: imported inspector from $where, not from the installed wheel" >&2; exit 1 ;;
esac
venv/bin/inspector --version | tee version.txt
grep -q "inspector/bundled/models" version.txt || {
  echo "check_wheel: --version does not show the wheel's bundled models" >&2; exit 1; }

venv/bin/python - <<'PY'
from inspector.commands.emulate import RECIPE_COMPONENT, recipe_defaults, recipe_path
where = recipe_path()
assert where is not None and "inspector/bundled/" in str(where), where
assert recipe_defaults()["ImageDirectory"], "the bundled recipe has no DefaultConfiguration"
print(f"check_wheel: emulate serves {RECIPE_COMPONENT}'s defaults from {where.name}")
PY

venv/bin/python - <<'PY'
from pathlib import Path
from inspector.synth import SynthConfig, generate, write_image
sample = generate(4242, 0, SynthConfig(p_clean=0.0, min_scratches=2, faint_fraction=0.0))
print("check_wheel: generated", write_image(sample, Path("tag")).name,
      f"with {len(sample.boxes_xyxy)} scratches")
PY
image=$(ls tag.*)
venv/bin/inspector predict "$image" --json > result.jsonl
venv/bin/python - <<'PY'
import json
lines = open("result.jsonl").read().splitlines()
assert len(lines) == 1, lines
result = json.loads(lines[0])
assert "error" not in result, result
print(f"check_wheel: predict with the bundled model {result['model']['name']} "
      f"{result['model'].get('version')}: {result['verdict']}, "
      f"{len(result['detections'])} detection(s)")
PY
echo "check_wheel: OK"
