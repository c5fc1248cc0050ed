# Shared by the bench scripts: the N-row PostgreSQL data set and a config per store.
# Expects N, ROOT and WORK; sourced after infra/services.sh has exported the endpoints.

# The data: N deterministic sales rows over 90 days, ~150 bytes a row (as in ../shared/bench).
export PGPASSWORD=sluice
psql_() { psql -q -h 127.0.0.1 -U sluice -v ON_ERROR_STOP=1 "$@"; }
psql_ -d postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'sluice_bench'" | grep -q 1 \
  || psql_ -d postgres -c "CREATE DATABASE sluice_bench"
have=$(psql_ -d sluice_bench -Atc "SELECT count(*) FROM sales_table" 2>/dev/null || echo 0)
if [ "$have" != "$N" ]; then
  echo "bench: loading $N rows into sluice_bench.sales_table" >&2
  psql_ -d sluice_bench <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS sales_table;
CREATE TABLE sales_table (
  id bigserial PRIMARY KEY, user_id int, user_name text, date timestamptz,
  sales_team text, amount numeric(12,2), product text, qty int, updated_at timestamptz);
SELECT setseed(0.42);
INSERT INTO sales_table (user_id, user_name, date, sales_team, amount, product, qty, updated_at)
SELECT u, 'user ' || u, d, 'team ' || (u % 6), round((random() * 1000)::numeric, 2),
       (ARRAY['Starter','Pro','Team','Enterprise','Add-on','Support','Training','Hardware'])[1 + (g % 8)],
       1 + (g % 9), d
FROM (SELECT g, 1 + (g % 500) AS u,
             timestamptz '2025-01-01 00:00:00+00' + (g::float / $N) * interval '90 days' AS d
      FROM generate_series(1, $N) g) s;
CREATE INDEX ON sales_table (date);
ANALYZE sales_table;
SQL
fi

config() {  # config STORE FILE
  local store
  case "$1" in
    embedded) store="kind: embedded
  path: $WORK/store.db" ;;
    dynamodb) store="kind: dynamodb
  table_prefix: bench$(date +%s)-
  endpoint_url: $SLUICE_TEST_AWS_ENDPOINT
  create_tables: true" ;;
  esac
  cat >"$2" <<YAML
store:
  $store
secrets:
  bench: {engine: postgres, host: 127.0.0.1, port: 5432, database: sluice_bench,
          username: sluice, password: sluice, tls: disable}
sources:
  - id: bench-source
    name: bench
    engine: postgres
    secret_id: bench
    sync_type: registration
    initial_watermark: 2024-12-31T00:00:00Z
    query: |
      SELECT user_id AS member_id, user_name AS member_name, date, id AS reference,
             sales_team AS team_name, amount, product, qty
      FROM sales_table WHERE date >= {{ last_update_time }} AND date < {{ upper_date_limit }}
YAML
}

