#!/usr/bin/env bash
# Deploy both components to the Greengrass core this runs on, with greengrass-cli (no cloud).
#
#   scripts/deploy_local.sh [--dry-run] [--stage-dir DIR] [--models-dir DIR] [--precision fp32|int8]
#                           [--update-config JSON] [--cli PATH] [--no-gdk] [--build-dir DIR]
#                           [--registry FILE]
#
# 1. builds com.inspector.ScratchModel and com.inspector.Inference: with `gdk component build` in
#    their GDK projects (recipes/model/ and the top level) when gdk is on the PATH (and --no-gdk
#    is not given), else with scripts/build_component.py, which writes the same
#    greengrass-build/ layout;
# 2. stages DIR/recipes/<Name>-<Version>.yaml and DIR/artifacts/<Name>/<Version>/<files>
#    (greengrass-cli parses every file under --recipeDir as a recipe: only these two go there);
# 3. runs, as root (sudo when needed):
#      greengrass-cli deployment create --recipeDir DIR/recipes --artifactDir DIR/artifacts \
#        --merge com.inspector.ScratchModel=<v> --merge com.inspector.Inference=<v> \
#        [--update-config JSON]
# --dry-run stops after staging and prints that command instead of running it.
# --precision int8|fp32 merges {"ModelPrecision": ...} into com.inspector.Inference's configuration
# (with --update-config's own merge, if any): every model version ships both files.
# DIR defaults to build/greengrass-local; --cli to /greengrass/v2/bin/greengrass-cli.
# --models-dir, --build-dir (build outside the projects' greengrass-build/) and --registry
# (model versions already built, default recipes/model/published.json) imply --no-gdk.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stage="$repo/build/greengrass-local"
models_dir=""
precision=""
update_config=""
cli="/greengrass/v2/bin/greengrass-cli"
dry_run=0
use_gdk=1
build_dir=""
registry=""

# usage: the comment block at the top of this file, and nothing after it
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --stage-dir) stage="$2"; shift ;;
    --models-dir) models_dir="$2"; shift ;;
    --precision) precision="$2"; shift ;;
    --update-config) update_config="$2"; shift ;;
    --cli) cli="$2"; shift ;;
    --no-gdk) use_gdk=0 ;;
    --build-dir) build_dir="$2"; shift ;;
    --registry) registry="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy_local: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then
  py="$repo/.venv/bin/python"
else
  py="python3"
fi

# gdk cannot be told where the models are nor where to build: those mean the script build.
if [ -n "$models_dir" ] || [ -n "$build_dir" ] || [ -n "$registry" ]; then use_gdk=0; fi
if [ "$use_gdk" = 1 ] && ! command -v gdk >/dev/null 2>&1; then use_gdk=0; fi

project_dir() {  # the GDK project of <kind>: the top level for inference
  if [ "$1" = inference ]; then echo "$repo"; else echo "$repo/recipes/$1"; fi
}

built_dir() {  # where <kind> is built
  if [ -n "$build_dir" ]; then echo "$build_dir/$1"; else echo "$(project_dir "$1")/greengrass-build"; fi
}

build() {  # build <kind>
  local kind="$1"
  if [ "$use_gdk" = 1 ]; then
    echo "deploy_local: gdk component build ($kind)"
    (cd "$(project_dir "$kind")" && gdk component build)
  else
    echo "deploy_local: scripts/build_component.py $kind"
    local args=("$kind" --out "$(built_dir "$kind")")
    if [ -n "$models_dir" ]; then args+=(--models-dir "$models_dir"); fi
    if [ -n "$registry" ]; then args+=(--registry "$registry"); fi
    "$py" "$repo/scripts/build_component.py" "${args[@]}"
  fi
}

# name and version of a built component, from its generated recipe: "<Name> <Version>"
identity() {
  "$py" - "$1" <<'EOF'
import sys, yaml
recipe = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
print(recipe["ComponentName"], recipe["ComponentVersion"])
EOF
}

rm -rf "$stage/recipes" "$stage/artifacts"
mkdir -p "$stage/recipes" "$stage/artifacts"
merges=()
for kind in model inference; do
  build "$kind"
  built="$(built_dir "$kind")"
  read -r name version < <(identity "$built/recipes/recipe.yaml")
  cp "$built/recipes/recipe.yaml" "$stage/recipes/$name-$version.yaml"
  mkdir -p "$stage/artifacts/$name/$version"
  cp -R "$built/artifacts/$name/$version/." "$stage/artifacts/$name/$version/"
  merges+=(--merge "$name=$version")
done

case "$precision" in
  ""|fp32|int8) ;;
  *) echo "deploy_local: --precision must be fp32 or int8, not $precision" >&2; exit 2 ;;
esac
if [ -n "$precision" ]; then
  # greengrass-cli's --update-config: {"<component>": {"MERGE": {...}, "RESET": [...]}}
  update_config="$("$py" - "$update_config" "$precision" <<'EOF'
import json, sys
given, precision = sys.argv[1], sys.argv[2]
update = json.loads(given) if given else {}
merge = update.setdefault("com.inspector.Inference", {}).setdefault("MERGE", {})
if merge.get("ModelPrecision", precision) != precision:
    sys.exit(f"deploy_local: --precision {precision} but --update-config sets ModelPrecision "
             f"{merge['ModelPrecision']!r}")
merge["ModelPrecision"] = precision
print(json.dumps(update, sort_keys=True))
EOF
)"
fi

command=("$cli" deployment create
         --recipeDir "$stage/recipes" --artifactDir "$stage/artifacts" "${merges[@]}")
if [ -n "$update_config" ]; then command+=(--update-config "$update_config"); fi
if [ "$(id -u)" != 0 ]; then command=(sudo "${command[@]}"); fi

echo "deploy_local: staged in $stage"
if [ "$dry_run" = 1 ]; then
  echo "deploy_local: dry run; the command would be:"
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
"${command[@]}"
echo "deploy_local: follow it with: sudo $cli deployment list; sudo $cli component list;"
echo "deploy_local: logs in /greengrass/v2/logs/com.inspector.Inference.log"
