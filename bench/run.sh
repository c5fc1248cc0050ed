#!/usr/bin/env bash
# bench/run.sh [N] [STORES]: one N-row sync (default 1,000,000) from PostgreSQL into the
# embedded store and into moto's DynamoDB with the release `sluice` binary, then a
# re-sync of the same rows; prints rows/s, client CPU per row, peak RSS, and the sizes
# of the release binaries. STORES is "embedded dynamodb" by default.
set -euo pipefail
N=${1:-1000000}
STORES=${2:-embedded dynamodb}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-/tmp/sluice-bench}
mkdir -p "$WORK"
cd "$ROOT"
eval "$(bash infra/services.sh)"
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release -q -p sluice-cli -p sluice-sync
BIN="$ROOT/target/release/sluice"
source "$ROOT/bench/lib.sh"

measure() {  # measure LABEL CONFIG: one run under /usr/bin/time, one table row
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    /usr/bin/time -v -o "$WORK/time.txt" "$BIN" sync --json --config "$2" >"$WORK/run.json"
  awk -v label="$1" -v json="$(cat "$WORK/run.json")" -F': ' '
    /Elapsed/ { n = split($2, t, ":"); wall = (n == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
    /User time/ { cpu += $2 } /System time/ { cpu += $2 } /Maximum resident/ { rss = $2 / 1024 }
    END {
      match(json, /"rows_read":[0-9]+/); rows = substr(json, RSTART + 12, RLENGTH - 12)
      match(json, /"rows_written":[0-9]+/); written = substr(json, RSTART + 15, RLENGTH - 15)
      match(json, /"rows_unchanged":[0-9]+/); unchanged = substr(json, RSTART + 17, RLENGTH - 17)
      printf "| %s | %d | %d | %d | %.1f | %.0f | %.1f | %.1f |\n", label, rows, written, unchanged, wall,
             rows / wall, cpu / rows * 1e6, rss
    }' "$WORK/time.txt"
}

reset_watermark() {  # reset_watermark STORE CONFIG: so the re-sync reads the same rows again
  case "$1" in
    embedded) python3 -c "import sqlite3; c = sqlite3.connect('$WORK/store.db'); c.execute('UPDATE sources SET watermark_us = NULL'); c.commit()" ;;
    dynamodb) "$ROOT/.venv/bin/python" - "$(awk '/table_prefix/ {print $2}' "$2")Sources" <<'PY'
import sys, boto3
ddb = boto3.client("dynamodb", endpoint_url=__import__("os").environ["SLUICE_TEST_AWS_ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
ddb.update_item(TableName=sys.argv[1], Key={"source_id": {"S": "bench-source"}}, UpdateExpression="REMOVE watermark_us")
PY
    ;;
  esac
}

echo "| run | rows read | written | unchanged | wall s | rows/s | client CPU µs/row | peak RSS MB |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|"
for store in $STORES; do
  rm -f "$WORK"/store.db*
  config "$store" "$WORK/$store.yaml"
  measure "$store, first sync" "$WORK/$store.yaml"
  reset_watermark "$store" "$WORK/$store.yaml"
  measure "$store, re-sync (all unchanged)" "$WORK/$store.yaml"
done
echo
echo "release binaries: sluice $(stat -c %s target/release/sluice | awk '{printf "%.1f MB", $1/1048576}'), sluice-sync (x86_64 host build) $(stat -c %s target/release/sluice-sync | awk '{printf "%.1f MB", $1/1048576}')"
