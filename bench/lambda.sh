#!/usr/bin/env bash
# bench/lambda.sh [ROUNDS]: the Lambda functions' start-up and size. Runs the release
# `sluice-sync` (host build) under cargo-lambda's local Lambda runtime ROUNDS times
# (default 10), each a cold start, and prints the init time it logs (SDK configuration
# loaded and every client built: `init_ms`) and the wall time from exec to that line;
# then the size of each function's arm64 bootstrap from `sam build` (infra/sam-build.sh),
# when it has been run.
set -euo pipefail
ROUNDS=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
eval "$(bash infra/services.sh)"
source infra/sam-tools.sh
cargo build --release -q -p sluice-sync
PORT=9411
cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$PORT" >/dev/null 2>&1 &
WATCH=$!
trap 'kill $WATCH 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

echo "| round | init_ms (logged) | exec to ready, ms |"
echo "|--:|--:|--:|"
OUT=$(mktemp)
for round in $(seq "$ROUNDS"); do
  : >"$OUT"
  start=$(date +%s%N)
  env -i AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$PORT/.rt" AWS_LAMBDA_FUNCTION_NAME=_ \
    AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_ENDPOINT_URL="$SLUICE_TEST_AWS_ENDPOINT" \
    SLUICE_SOURCES_TABLE=s SLUICE_RECORDS_TABLE=r SLUICE_RUNS_TABLE=u SLUICE_MEMBERS_TABLE=m \
    target/release/sluice-sync >"$OUT" 2>&1 &
  pid=$!
  # Builtins only while waiting (no fork), so the wait adds microseconds, not milliseconds.
  line=
  until read -r line <"$OUT" && [[ $line == *init_ms* ]]; do
    kill -0 "$pid" 2>/dev/null || { echo "sluice-sync exited: $(cat "$OUT")" >&2; exit 1; }
  done
  end=$(date +%s%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  init=$(sed -n 's/.*"init_ms":\([0-9.]*\).*/\1/p' <<<"$line")
  awk -v r="$round" -v i="$init" -v w="$(( end - start ))" 'BEGIN { printf "| %d | %.1f | %.1f |\n", r, i, w / 1e6 }'
done
rm -f "$OUT"

echo
echo "host release binary: $(stat -c %s target/release/sluice-sync) bytes"
for bootstrap in .aws-sam/build/*/bootstrap; do
  [ -f "$bootstrap" ] && echo "$(basename "$(dirname "$bootstrap")") arm64 bootstrap: $(stat -c %s "$bootstrap") bytes"
done
