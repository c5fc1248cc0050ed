#!/usr/bin/env bash
# bench/backfill.sh [N] [STORES]: a backfill of the N-row data set (default 1,000,000,
# 90 days) in 30 chunks of 3 days with the release `sluice` binary, into the embedded
# store and into moto's DynamoDB; prints rows/s, client CPU per row and peak RSS. Then,
# on the embedded store, how long a cancelled job takes to stop: a second process
# cancels while a chunk runs, and the time until the worker exits is measured.
set -euo pipefail
N=${1:-1000000}
STORES=${2:-embedded dynamodb}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-/tmp/sluice-bench}
mkdir -p "$WORK"
cd "$ROOT"
eval "$(bash infra/services.sh)"
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release -q -p sluice-cli
BIN="$ROOT/target/release/sluice"
source "$ROOT/bench/lib.sh"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
RANGE=(--from 2025-01-01 --to 2025-04-01 --chunk 3d)

echo "| backfill, 30 chunks | rows read | written | wall s | rows/s | client CPU µs/row | peak RSS MB |"
echo "|---|--:|--:|--:|--:|--:|--:|"
for store in $STORES; do
  rm -f "$WORK"/store.db*
  config "$store" "$WORK/$store.yaml"
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" backfill --json --config "$WORK/$store.yaml" \
    --source bench-source "${RANGE[@]}" >"$WORK/backfill.json" 2>/dev/null
  python3 - "$store" "$WORK/backfill.json" "$WORK/time.txt" <<'PY'
import json, re, sys
store, job, timing = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read()
assert job["status"] == "done" and len(job["chunks"]) == 30, job["status"]
p = job["progress"]
wall = re.search(r"Elapsed.*: (?:(\d+):)?(\d+):([\d.]+)", timing).groups()
wall = int(wall[0] or 0) * 3600 + int(wall[1]) * 60 + float(wall[2])
cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", timing))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1)) / 1024
print(f"| {store} | {p['rows_read']} | {p['rows_written']} | {wall:.1f} | {p['rows_read'] / wall:.0f} "
      f"| {cpu / p['rows_read'] * 1e6:.1f} | {rss:.1f} |")
PY
done

# Cancel: start a backfill, cancel it from another process once two chunks are done,
# and time how long the worker takes to stop (it finishes the running chunk).
rm -f "$WORK"/store.db*
config embedded "$WORK/cancel.yaml"
"$BIN" backfill --json --config "$WORK/cancel.yaml" --source bench-source "${RANGE[@]}" >"$WORK/cancelled.json" 2>/dev/null &
worker=$!
until python3 -c "
import json, sqlite3, sys
rows = sqlite3.connect('file:$WORK/store.db?mode=ro', uri=True).execute('SELECT body FROM backfills WHERE active = 1').fetchall()
sys.exit(0 if rows and sum(c['status'] == 'done' for c in json.loads(rows[0][0])['chunks']) >= 2 else 1)
" 2>/dev/null; do sleep 0.05; done
asked=$(date +%s.%N)
"$BIN" backfill --config "$WORK/cancel.yaml" --source bench-source --cancel >/dev/null
wait "$worker" || true
stopped=$(date +%s.%N)
python3 - "$WORK/cancelled.json" "$asked" "$stopped" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
p = job["progress"]
print(f"\ncancel: job {job['status']} {(float(sys.argv[3]) - float(sys.argv[2])) * 1000:.0f} ms after the cancel "
      f"({p['chunks_done']} of 30 chunks done, {p['chunks_pending']} never started)")
PY
