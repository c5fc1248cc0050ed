#!/usr/bin/env bash
# bench/faults.sh [ROWS] [ROUNDS] [KILLS]: every fault scenario of tests/src/chaos.rs
# (AWS faults behind the fault proxy, sessions killed, servers crashed, locks held,
# `sluice sync` SIGKILLed, overlapping invocations, a backfill racing scheduled runs,
# a skewed clock, each while late writers commit), then one table: scenario | runs |
# faults injected | rows | missing | stale | duplicated or extra | runs failed with a
# clear message | time to catch up. Defaults: 20,000 rows, 10 rounds, 200 kills.
# Exits non-zero when any row is missing, stale, duplicated or extra, or a failed run
# did not say why.
set -euo pipefail
ROWS=${1:-20000}
ROUNDS=${2:-10}
KILLS=${3:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
eval "$(bash infra/services.sh)"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
# The SIGKILL scenario runs the debug `sluice` binary, as the tests do.
cargo build -q --workspace --bins
# The Lambda wiring prints its metric documents (EMF) to stdout, as in AWS: only the
# table's lines are kept; the scenarios' details go to stderr.
"$ROOT/target/debug/sluice-faults" "$ROWS" "$ROUNDS" "$KILLS" | grep '^|' 
