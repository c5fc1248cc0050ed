#!/usr/bin/env bash
# bench/sizes.sh: the arm64 bootstraps a deployment ships, built as `sam build` builds
# them (cargo-lambda, the release profile: lto, codegen-units 1, strip): the sync
# function with every engine (the default) and with PostgreSQL and MySQL only, and the
# deliver function (no engine). DESIGN §9's target is 15 MB for the sync function.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source infra/sam-tools.sh
export CARGO_TARGET_DIR=${SIZES_TARGET_DIR:-/tmp/sluice-sizes}
size() {  # size LABEL PACKAGE [cargo flags]
  local label=$1 package=$2
  shift 2
  cargo lambda build --release --arm64 -p "$package" "$@" >&2
  local b
  b=$(stat -c %s "$CARGO_TARGET_DIR/lambda/$package/bootstrap")
  awk -v l="$label" -v b="$b" 'BEGIN { printf "| %s | %.1f MiB (%d bytes) |\n", l, b / 1048576, b }'
}
echo "| function (arm64 bootstrap) | size |"
echo "|---|--:|"
size "sluice-sync, every engine (default)" sluice-sync
size "sluice-sync, postgres and mysql only" sluice-sync --no-default-features --features postgres,mysql
size "sluice-deliver (no engine)" sluice-deliver
