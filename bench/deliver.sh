#!/usr/bin/env bash
# bench/deliver.sh [N]: N Customer.io-style track calls (default 100,000) synced from
# PostgreSQL into the embedded store, then delivered by the release `sluice deliver` to
# the tests' Segment-compatible receiver on loopback (tests/src/receiver.rs, its own
# process). Prints calls/s, client CPU per call and peak RSS of the delivery, and what
# the receiver took.
set -euo pipefail
N=${1:-100000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-/tmp/sluice-bench-deliver}
rm -rf "$WORK" && mkdir -p "$WORK"
cd "$ROOT"
eval "$(bash infra/services.sh)"
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release -q -p sluice-cli -p sluice-tests --bin sluice --bin sluice-receiver
source "$ROOT/bench/lib.sh"

KEY=bench-write-key
coproc RECEIVER { "$ROOT/target/release/sluice-receiver" "$KEY"; }
read -r BASE <&"${RECEIVER[0]}"
cat >"$WORK/sluice.yaml" <<YAML
store: {kind: embedded, path: $WORK/store.db}
secrets:
  bench: {engine: postgres, host: 127.0.0.1, port: 5432, database: sluice_bench,
          username: sluice, password: sluice, tls: disable}
  cio: {write_key: $KEY}
sources:
  - id: bench-events
    name: bench
    engine: postgres
    secret_id: bench
    sync_type: track
    initial_watermark: 2024-12-31T00:00:00Z
    destination: {kind: http, base_url: "$BASE", secret_id: cio}
    query: |
      SELECT id AS message_id, 'u' || user_id AS user_id, 'Order Completed' AS event,
             amount, product, qty, sales_team, date AS timestamp
      FROM sales_table WHERE date >= {{ last_update_time }} AND date < {{ upper_date_limit }}
YAML
"$ROOT/target/release/sluice" sync --config "$WORK/sluice.yaml" >/dev/null
SLUICE_DESTINATIONS_ALLOW_LOOPBACK=true /usr/bin/time -v -o "$WORK/time.txt" "$ROOT/target/release/sluice" deliver --json --config "$WORK/sluice.yaml" >"$WORK/report.json"
exec {RECEIVER[1]}>&-
read -r TOOK <&"${RECEIVER[0]}"
echo "| calls | delivered | wall s | calls/s | client CPU µs/call | peak RSS MB | receiver took |"
echo "|--:|--:|--:|--:|--:|--:|---|"
awk -v n="$N" -v took="$TOOK" -v json="$(cat "$WORK/report.json")" -F': ' '
  /Elapsed/ { k = split($2, t, ":"); wall = (k == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
  /User time/ { cpu += $2 } /System time/ { cpu += $2 } /Maximum resident/ { rss = $2 / 1024 }
  END {
    match(json, /"delivered":[0-9]+/); delivered = substr(json, RSTART + 12, RLENGTH - 12)
    printf "| %d | %d | %.1f | %.0f | %.1f | %.1f | %s |\n", n, delivered, wall, delivered / wall,
           cpu / delivered * 1e6, rss, took
  }' "$WORK/time.txt"
