#!/usr/bin/env bash
# TLS servers for the verify-full tests: a certificate authority made here, and a
# PostgreSQL cluster (127.0.0.1:5433) and a MariaDB server (127.0.0.1:3307) whose
# certificates it signed for the name `localhost` only. A second, unrelated CA stands
# for "the wrong CA". Everything lives under /var/lib/sluice-tests, shared by every
# checkout on the machine, and is made once. Sourced by infra/services.sh.
TLS_DIR=/var/lib/sluice-tests/tls
PG_TLS_PORT=5433
MYSQL_TLS_PORT=3307

if [ ! -s "$TLS_DIR/other-ca.pem" ]; then
  log "making the test certificate authority in $TLS_DIR"
  as_root mkdir -p "$TLS_DIR"
  command -v openssl >/dev/null || apt_install openssl
  tmp=$(mktemp -d)
  (
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Sluice test CA" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile ext.cnf -out server.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Some other CA" \
      -keyout other-ca-key.pem -out other-ca.pem 2>/dev/null
  )
  as_root cp "$tmp"/ca.pem "$tmp"/server.pem "$tmp"/server-key.pem "$tmp"/other-ca.pem "$TLS_DIR/"
  rm -rf "$tmp"
  as_root chmod 755 "$TLS_DIR"
  as_root chmod 644 "$TLS_DIR"/*.pem
fi

# PostgreSQL: a second cluster of the installed version, TLS only with our certificate.
if ! port_open "$PG_TLS_PORT"; then
  PGVER=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if ! pg_lsclusters -h | awk -v v="$PGVER" '$1==v && $2=="sluicetls"' | grep -q .; then
    log "creating the PostgreSQL TLS cluster on 127.0.0.1:$PG_TLS_PORT"
    as_root pg_createcluster "$PGVER" sluicetls -p "$PG_TLS_PORT" >/dev/null
  fi
  conf=/etc/postgresql/$PGVER/sluicetls
  as_root install -o postgres -g postgres -m 600 "$TLS_DIR/server-key.pem" "/var/lib/postgresql/$PGVER/sluicetls/server-key.pem"
  as_root install -o postgres -g postgres -m 644 "$TLS_DIR/server.pem" "/var/lib/postgresql/$PGVER/sluicetls/server.pem"
  as_root tee "$conf/conf.d/sluice-tls.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '/var/lib/postgresql/$PGVER/sluicetls/server.pem'
ssl_key_file = '/var/lib/postgresql/$PGVER/sluicetls/server-key.pem'
CONF
  log "starting the PostgreSQL TLS cluster"
  as_root pg_ctlcluster --skip-systemctl-redirect "$PGVER" sluicetls start 2>/dev/null \
    || as_root pg_ctlcluster "$PGVER" sluicetls start
  wait_port "$PG_TLS_PORT" "PostgreSQL (TLS)" "/var/log/postgresql/postgresql-$PGVER-sluicetls.log"
  as_root su postgres -c "psql -q -p $PG_TLS_PORT -d postgres -v ON_ERROR_STOP=1" >/dev/null <<'SQL'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice') THEN
    CREATE ROLE sluice LOGIN PASSWORD 'sluice';
  END IF;
END$$;
SQL
fi

# MariaDB: a second server with its own data directory, TLS with our certificate.
if ! port_open "$MYSQL_TLS_PORT"; then
  data=/var/lib/sluice-tests/mariadb-tls
  if [ ! -d "$data/mysql" ]; then
    log "creating the MariaDB TLS server's data directory"
    as_root mkdir -p "$data"
    as_root chown mysql:mysql "$data"
    as_root mariadb-install-db --user=mysql --datadir="$data" --auth-root-authentication-method=socket >/dev/null
  fi
  as_root install -o mysql -g mysql -m 600 "$TLS_DIR/server-key.pem" "$data/server-key.pem"
  as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld
  log "starting the MariaDB TLS server on 127.0.0.1:$MYSQL_TLS_PORT"
  as_root start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/sluice-tls.pid \
    --exec /usr/sbin/mariadbd -- --user=mysql --datadir="$data" --port="$MYSQL_TLS_PORT" \
    --bind-address=127.0.0.1 --socket=/run/mysqld/sluice-tls.sock --pid-file=/run/mysqld/sluice-tls.pid \
    --log-error="$data/error.log" --skip-log-bin \
    --ssl-ca="$TLS_DIR/ca.pem" --ssl-cert="$TLS_DIR/server.pem" --ssl-key="$data/server-key.pem"
  wait_port "$MYSQL_TLS_PORT" "MariaDB (TLS)" "$data/error.log"
  for _ in $(seq 60); do as_root mariadb -uroot --socket=/run/mysqld/sluice-tls.sock -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
  as_root mariadb -uroot --socket=/run/mysqld/sluice-tls.sock >/dev/null <<'SQL'
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY 'sluice';
CREATE USER IF NOT EXISTS 'sluice'@'localhost' IDENTIFIED BY 'sluice';
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'sluice'@'localhost';
SQL
fi
