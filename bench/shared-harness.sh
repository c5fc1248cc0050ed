#!/usr/bin/env bash
# OURS_CMD for ../shared/bench/run_peers.sh: turns the harness's environment
# (BENCH_DSN, DYNAMO_ENDPOINT, BENCH_TABLE, WINDOW_START, AWS_*) into a sluice config
# and runs one sync; prints `rows=<n> seconds=<s>` last. Being a wrapper, it is measured
# with the sync, as the harness asks. Use:
#   cargo build --release -p sluice-cli
#   OURS_NAME="ours: sluice" OURS_CMD="$PWD/bench/shared-harness.sh" bash ../shared/bench/run_peers.sh 200000
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${SLUICE_BIN:-$HERE/../target/release/sluice}
dsn() { tr ' ' '\n' <<<"$BENCH_DSN" | awk -F= -v k="$1" '$1 == k {print $2}'; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cat >"$DIR/sluice.yaml" <<YAML
store:
  kind: dynamodb
  table_prefix: ${BENCH_TABLE}-
  tables: {records: ${BENCH_TABLE}}
  endpoint_url: ${DYNAMO_ENDPOINT}
  create_tables: true
secrets:
  bench: {engine: postgres, host: "$(dsn host)", port: $(dsn port), database: "$(dsn dbname)",
          username: "$(dsn user)", password: "$(dsn password)", tls: disable}
sources:
  - id: bench-source
    name: bench
    engine: postgres
    secret_id: bench
    sync_type: registration
    initial_watermark: ${WINDOW_START}
    query: |
      SELECT user_id AS member_id, user_name AS member_name, date, id AS reference,
             sales_team AS team_name, amount, product, qty
      FROM sales_table WHERE date > {{ last_update_time }} AND date < {{ upper_date_limit }}
YAML
AWS_REGION=${AWS_DEFAULT_REGION:-us-east-1} "$BIN" sync --json --config "$DIR/sluice.yaml" >"$DIR/run.json"
rows=$(grep -o '"rows_read":[0-9]*' "$DIR/run.json" | cut -d: -f2)
ms=$(grep -o '"duration_ms":[0-9]*' "$DIR/run.json" | cut -d: -f2)
echo "rows=$rows seconds=$(awk -v ms="$ms" 'BEGIN {printf "%.3f", ms / 1000}')"
