#!/usr/bin/env bash
# Start, on loopback, every service the tests need and that is not running yet:
# PostgreSQL, MariaDB, moto's server (DynamoDB, Secrets Manager, EventBridge), fakesnow
# (Snowflake's REST protocol), bqemulator (BigQuery's REST API), and
# TLS instances of PostgreSQL and MariaDB with a test CA (infra/tls.sh), an
# OpenSSH server for tunnels (infra/ssh.sh), and Babelfish for SQL Server
# (infra/babelfish.sh; built once per machine, about 20 minutes).
# Idempotent: installs only what is missing (apt-get, pip into ./.venv) and leaves
# running services alone. Prints the environment the tests read.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.local"            # git-ignored: venv logs, pid files
VENV="$ROOT/.venv"
MOTO_PORT=${SLUICE_MOTO_PORT:-5055}
mkdir -p "$STATE"
# Only the environment below goes to stdout (it is eval'd); anything a tool prints, such
# as pg_ctl's "Removed stale pid file", goes to stderr with the logs.
{

log() { printf 'infra: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT WHAT LOGFILE
  for _ in $(seq 120); do port_open "$1" && return 0; sleep 0.5; done
  log "$2 did not start on 127.0.0.1:$1; see $3"; exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL ---------------------------------------------------------------
if ! port_open 5432; then
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { log "installing PostgreSQL"; apt_install postgresql; }
  PGVER=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | awk -v v="$PGVER" '$1==v && $2=="main"' | grep -q . || as_root pg_createcluster "$PGVER" main >/dev/null
  log "starting PostgreSQL $PGVER"
  as_root pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start || as_root pg_ctlcluster "$PGVER" main start
  wait_port 5432 PostgreSQL "/var/log/postgresql/postgresql-$PGVER-main.log"
fi
# A login role with a password, so tests can also prove that a wrong one is refused.
as_root su postgres -c "psql -q -h 127.0.0.1 -d postgres -v ON_ERROR_STOP=1" >/dev/null <<'SQL' || as_root su postgres -c "psql -q -d postgres -v ON_ERROR_STOP=1" >/dev/null <<'SQL2'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice') THEN
    CREATE ROLE sluice LOGIN SUPERUSER PASSWORD 'sluice';
  END IF;
END$$;
SQL
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice') THEN
    CREATE ROLE sluice LOGIN SUPERUSER PASSWORD 'sluice';
  END IF;
END$$;
SQL2

# --- MariaDB ------------------------------------------------------------------
if ! port_open 3306; then
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || { log "installing MariaDB"; apt_install mariadb-server; }
  as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld
  log "starting MariaDB"
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
    --user=mysql --bind-address=127.0.0.1 --port=3306
  wait_port 3306 MariaDB /var/log/mysql/error.log
fi
for _ in $(seq 60); do as_root mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
as_root mariadb -uroot >/dev/null <<'SQL'
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY 'sluice';
CREATE USER IF NOT EXISTS 'sluice'@'localhost' IDENTIFIED BY 'sluice';
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'localhost' WITH GRANT OPTION;
SQL

# --- moto server (DynamoDB, Secrets Manager, EventBridge) ----------------------
if ! port_open "$MOTO_PORT"; then
  if ! "$VENV/bin/python" -c 'import moto.server' 2>/dev/null; then
    log "installing moto into $VENV"
    command -v python3 >/dev/null || apt_install python3 python3-venv
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5.1,<6'
  fi
  log "starting moto on 127.0.0.1:$MOTO_PORT"
  # Through infra/moto_server.py: moto with DynamoDB's atomic conditional writes.
  nohup "$VENV/bin/python" "$ROOT/infra/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  wait_port "$MOTO_PORT" moto "$STATE/moto.log"
fi

# --- fakesnow: Snowflake's connector REST protocol over DuckDB -----------------------
SNOWFLAKE_PORT=${SLUICE_SNOWFLAKE_PORT:-8085}
if ! port_open "$SNOWFLAKE_PORT"; then
  if ! "$VENV/bin/python" -c 'import fakesnow.server' 2>/dev/null; then
    log "installing fakesnow into $VENV"
    # fakesnow does not import with snowflake-connector-python 5.
    "$VENV/bin/pip" install -q --disable-pip-version-check 'fakesnow[server]==0.12.1' 'snowflake-connector-python<5'
  fi
  log "starting fakesnow (Snowflake) on 127.0.0.1:$SNOWFLAKE_PORT"
  nohup "$VENV/bin/fakesnow" -s -p "$SNOWFLAKE_PORT" --host 127.0.0.1 >"$STATE/fakesnow.log" 2>&1 &
  echo $! >"$STATE/fakesnow.pid"
  wait_port "$SNOWFLAKE_PORT" fakesnow "$STATE/fakesnow.log"
fi

# --- bqemulator: BigQuery's REST API over DuckDB, in a venv of its own -------------
# It pins a DuckDB older than fakesnow's, and starts only when DuckDB's spatial
# extension is already in place: it is copied from its PyPI package, not downloaded.
BIGQUERY_PORT=${SLUICE_BIGQUERY_PORT:-9050}
BQ_VENV="$ROOT/.venv-bq"
if ! port_open "$BIGQUERY_PORT"; then
  if ! "$BQ_VENV/bin/python" -c 'import bqemulator' 2>/dev/null; then
    log "installing bqemulator into $BQ_VENV"
    python3 -m venv "$BQ_VENV"
    "$BQ_VENV/bin/pip" install -q --disable-pip-version-check 'bqemulator==1.4.0' 'duckdb==1.5.5' \
      'duckdb-extension-spatial==1.5.5' numpy
  fi
  case "$(uname -m)" in aarch64|arm64) duck_arch=linux_arm64 ;; *) duck_arch=linux_amd64 ;; esac
  ext_dir="$HOME/.duckdb/extensions/v1.5.5/$duck_arch"
  if [ ! -f "$ext_dir/spatial.duckdb_extension" ]; then
    mkdir -p "$ext_dir"
    cp "$(find "$BQ_VENV" -name spatial.duckdb_extension | head -1)" "$ext_dir/"
  fi
  log "starting bqemulator (BigQuery) on 127.0.0.1:$BIGQUERY_PORT"
  nohup "$BQ_VENV/bin/bqemulator" start --rest-port "$BIGQUERY_PORT" --grpc-port 0 --project sluice-test \
    >"$STATE/bqemulator.log" 2>&1 &
  echo $! >"$STATE/bqemulator.pid"
  wait_port "$BIGQUERY_PORT" bqemulator "$STATE/bqemulator.log"
fi

# --- TLS servers for verify-full (PostgreSQL :5433, MariaDB :3307) ----------------
source "$ROOT/infra/tls.sh"

# --- OpenSSH on 127.0.0.1:2222 for SSH tunnels -------------------------------------
source "$ROOT/infra/ssh.sh"

# --- Babelfish: SQL Server's TDS on 127.0.0.1:1433 (TLS) and :1434 -----------------
source "$ROOT/infra/babelfish.sh"

} >&2

cat <<ENV
export SLUICE_TEST_PG_URL=postgres://sluice:sluice@127.0.0.1:5432/postgres
export SLUICE_TEST_MYSQL_URL=mysql://sluice:sluice@127.0.0.1:3306/mysql
export SLUICE_TEST_AWS_ENDPOINT=http://127.0.0.1:$MOTO_PORT
export SLUICE_TEST_TLS_DIR=$TLS_DIR
export SLUICE_TEST_PG_TLS_PORT=$PG_TLS_PORT
export SLUICE_TEST_MYSQL_TLS_PORT=$MYSQL_TLS_PORT
export SLUICE_TEST_SSH_DIR=$SSH_DIR
export SLUICE_TEST_SSH_PORT=$SSH_PORT
export SLUICE_TEST_SNOWFLAKE_PORT=$SNOWFLAKE_PORT
export SLUICE_TEST_BIGQUERY_PORT=$BIGQUERY_PORT
export SLUICE_TEST_SQLSERVER_PORT=$BBF_TLS_PORT
export SLUICE_TEST_SQLSERVER_PLAIN_PORT=$BBF_PLAIN_PORT
ENV
