#!/usr/bin/env bash
# Babelfish for PostgreSQL: a real SQL Server protocol (TDS) and T-SQL server for the
# SQL Server tests. Sourced by infra/services.sh (it uses log, as_root, apt_install,
# port_open and wait_port from there).
#
# - Installs from a prebuilt archive when ../shared/babelfish/ has one, else builds
#   from the source tarballs there (modified PostgreSQL 16.3, babelfish_extensions
#   4.2.0, ANTLR4's C++ runtime 4.9.3) into a cache outside the checkout, keyed by
#   version: /var/cache/sluice/babelfish-4.2.0-pg16.3-r1. The build takes about 35
#   minutes on 2 cores, once per machine; later runs reuse the cache. It leaves an
#   archive of the install beside it, which can go into ../shared/babelfish/ so that
#   fresh machines unpack instead of building.
# - Runs two servers as the `postgres` user, data under /var/lib/sluice-tests/babelfish:
#   TDS 127.0.0.1:1433 with TLS (the certificate of infra/tls.sh's test CA, for
#   `localhost`), and TDS 127.0.0.1:1434 without TLS (the tests of a server that offers
#   no encryption). Their PostgreSQL ports are 5435 and 5436. The T-SQL login
#   `sluice` (password $BBF_PASSWORD) is sysadmin; migration mode multi-db, so tests
#   create databases of their own.
BBF_VERSION=4.2.0
BBF_PG=16.3
BBF_KEY=babelfish-$BBF_VERSION-pg$BBF_PG-r1
BBF_CACHE=${SLUICE_CACHE:-/var/cache/sluice}/$BBF_KEY
BBF_PREFIX=$BBF_CACHE/install
BBF_SOURCES=${SLUICE_BABELFISH_SOURCES:-$ROOT/../shared/babelfish/sources}
BBF_ARCHIVE=$BBF_KEY-$(uname -m).tar.zst
BBF_DATA=/var/lib/sluice-tests/babelfish
BBF_PASSWORD=Sluice-Test-1
BBF_TLS_PORT=1433
BBF_PLAIN_PORT=1434

bbf_build() {
  local work=$BBF_CACHE/work jobs
  jobs=$(nproc)
  for f in antlr4-cpp-runtime-4.9.3.tar.gz babelfish_extensions-BABEL_4_2_0.tar.gz \
           postgresql_modified_for_babelfish-BABEL_4_2_0__PG_16_3.tar.gz; do
    [ -s "$BBF_SOURCES/$f" ] || { log "Babelfish: $BBF_SOURCES/$f is missing (set SLUICE_BABELFISH_SOURCES to the folder of the source tarballs)"; exit 1; }
  done
  log "Babelfish: installing the build tools"
  apt_install build-essential pkg-config bison flex perl cmake openjdk-17-jre-headless libicu-dev \
    libxml2-dev libssl-dev libossp-uuid-dev uuid-dev libreadline-dev zlib1g-dev libutfcpp-dev zstd patchelf
  log "Babelfish: building $BBF_KEY into $BBF_PREFIX (about 20 minutes on 2 cores; logs in $work)"
  as_root rm -rf "$work" "$BBF_PREFIX"
  as_root mkdir -p "$work/src"
  as_root chown -R "$(id -u)" "$BBF_CACHE"
  for f in "$BBF_SOURCES"/*.tar.gz; do tar -xzf "$f" -C "$work/src"; done
  local engine ext antlr
  engine=$(ls -d "$work"/src/postgresql_modified_for_babelfish*) ext=$(ls -d "$work"/src/babelfish_extensions*)
  antlr=$(ls -d "$work"/src/antlr4*)
  (
    set -e
    # The ANTLR C++ runtime, whose version the extension's parser generator (the jar it
    # ships) must match. Its headers include utf8.h, which Debian's libutfcpp-dev has.
    cmake -S "$antlr/runtime/Cpp" -B "$work/antlr-build" -DCMAKE_BUILD_TYPE=Release -DWITH_DEMO=False \
      -DCMAKE_INSTALL_PREFIX="$work/antlr" >"$work/antlr.log" 2>&1
    make -C "$work/antlr-build" -j"$jobs" antlr4_shared >>"$work/antlr.log" 2>&1
    mkdir -p "$work/antlr/include/antlr4-runtime" "$BBF_PREFIX/lib"
    (cd "$antlr/runtime/Cpp/runtime/src" && find . -name '*.h' -exec cp --parents {} "$work/antlr/include/antlr4-runtime/" \;)
    cp -a /usr/include/utf8cpp/utf8.h /usr/include/utf8cpp/utf8 "$work/antlr/include/antlr4-runtime/"

    # The modified PostgreSQL, and the one contrib module Babelfish needs.
    cd "$engine"
    ./configure --prefix="$BBF_PREFIX" --with-libxml --with-uuid=ossp --with-icu --with-openssl \
      --disable-rpath CFLAGS="-O2" >"$work/engine.log" 2>&1
    make -j"$jobs" >>"$work/engine.log" 2>&1
    make install >>"$work/engine.log" 2>&1
    make -C contrib/uuid-ossp install >>"$work/engine.log" 2>&1
    cp -a "$antlr"/runtime/Cpp/dist/libantlr4-runtime.so* "$BBF_PREFIX/lib/"

    # The extensions. Their makefiles add -Werror, which Debian 12's gcc 12 fails on
    # (maybe-uninitialized); and they rely on -fcommon, the default before gcc 10.
    export PG_CONFIG=$BBF_PREFIX/bin/pg_config PG_SRC=$engine cmake=$(command -v cmake)
    sed -i "s|SET (MYDIR /usr/local/include/antlr4-runtime/)|SET (MYDIR $work/antlr/include/antlr4-runtime/)|" \
      "$ext/contrib/babelfishpg_tsql/antlr/CMakeLists.txt"
    for e in babelfishpg_money babelfishpg_common babelfishpg_tds babelfishpg_tsql; do
      make -C "$ext/contrib/$e" -j"$jobs" PG_CFLAGS="-g -fstack-protector-strong -fcommon" \
        ANTLR4_RUNTIME_INCLUDE_DIR="$work/antlr/include/antlr4-runtime" \
        ANTLR4_RUNTIME_LIB_DIR="$antlr/runtime/Cpp/dist" >"$work/$e.log" 2>&1
      make -C "$ext/contrib/$e" install PG_CFLAGS="-g -fstack-protector-strong -fcommon" \
        ANTLR4_RUNTIME_INCLUDE_DIR="$work/antlr/include/antlr4-runtime" \
        ANTLR4_RUNTIME_LIB_DIR="$antlr/runtime/Cpp/dist" >>"$work/$e.log" 2>&1
    done
    # Library paths relative to each file, so the install works wherever its archive
    # is unpacked. PostgreSQL loads the T-SQL extension with dlopen, which would not
    # find the ANTLR runtime it needs on the server's own path.
    for f in "$BBF_PREFIX"/bin/*; do
      if head -c4 "$f" | grep -q ELF; then patchelf --set-rpath '$ORIGIN/../lib' "$f"; fi
    done
    patchelf --set-rpath '$ORIGIN/..' "$BBF_PREFIX/lib/postgresql/babelfishpg_tsql.so"
  ) || { log "Babelfish: the build failed; the end of its newest log:"; tail -40 "$(ls -t "$work"/*.log | head -1)" >&2; exit 1; }
  echo "$BBF_KEY" >"$BBF_PREFIX/BUILT"
  tar -C "$BBF_CACHE" -cf - install | zstd -q -T0 -o "$BBF_CACHE/$BBF_ARCHIVE" -f
  rm -rf "$work"
  log "Babelfish: built; the archive $BBF_CACHE/$BBF_ARCHIVE can go into ../shared/babelfish/"
}

bbf_install() {
  [ "$(cat "$BBF_PREFIX/BUILT" 2>/dev/null)" = "$BBF_KEY" ] && return 0
  as_root mkdir -p "$BBF_CACHE"
  if [ -s "$BBF_SOURCES/../$BBF_ARCHIVE" ]; then
    log "Babelfish: unpacking $BBF_ARCHIVE"
    apt_install zstd libicu72 libxml2 libossp-uuid16 libreadline8
    as_root rm -rf "$BBF_PREFIX"
    zstd -dc "$BBF_SOURCES/../$BBF_ARCHIVE" | as_root tar -C "$BBF_CACHE" -xf -
  else
    bbf_build
  fi
}

# bbf_start NAME PG_PORT TDS_PORT SSL: a cluster under $BBF_DATA/NAME, initialised once.
bbf_start() {
  local name=$1 pg_port=$2 tds_port=$3 ssl=$4
  local data=$BBF_DATA/$name
  port_open "$tds_port" && return 0
  id postgres >/dev/null 2>&1 || as_root useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  as_user() { as_root runuser -u postgres -- "$@"; }
  if [ ! -f "$data/babelfish_initialized" ]; then
    log "Babelfish: initialising $data"
    as_root rm -rf "$data"
    as_root mkdir -p "$data"
    as_root chown postgres "$BBF_DATA" "$data"
    as_root chmod 700 "$data"
    # TDS logins need md5 (Babelfish does not take scram-sha-256 over TDS).
    as_user "$BBF_PREFIX/bin/initdb" -D "$data" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=md5 >"$STATE/babelfish-$name-initdb.log" 2>&1 \
      || { cat "$STATE/babelfish-$name-initdb.log" >&2; exit 1; }
    if [ "$ssl" = on ]; then
      as_root install -o postgres -m 600 "$TLS_DIR/server-key.pem" "$data/server-key.pem"
      as_root install -o postgres -m 644 "$TLS_DIR/server.pem" "$data/server.pem"
    fi
    as_user tee -a "$data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$data'
shared_preload_libraries = 'babelfishpg_tds'
babelfishpg_tds.listen_addresses = '127.0.0.1'
babelfishpg_tds.port = $tds_port
ssl = $ssl
ssl_cert_file = 'server.pem'
ssl_key_file = 'server-key.pem'
CONF
    as_user "$BBF_PREFIX/bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 120 start >/dev/null
    as_user "$BBF_PREFIX/bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$data" -p "$pg_port" -d postgres \
      -v pw="$BBF_PASSWORD" >"$STATE/babelfish-$name-init.log" 2>&1 <<'SQL' || { cat "$STATE/babelfish-$name-init.log" >&2; exit 1; }
CREATE USER sluice WITH SUPERUSER CREATEDB CREATEROLE PASSWORD :'pw' INHERIT;
CREATE DATABASE babelfish_db OWNER sluice;
\c babelfish_db
CREATE EXTENSION IF NOT EXISTS "babelfishpg_tds" CASCADE;
GRANT ALL ON SCHEMA sys TO sluice;
ALTER SYSTEM SET babelfishpg_tsql.database_name = 'babelfish_db';
ALTER SYSTEM SET babelfishpg_tsql.migration_mode = 'multi-db';
SELECT pg_reload_conf();
CALL sys.initialize_babelfish('sluice');
SQL
    as_user "$BBF_PREFIX/bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 120 stop >/dev/null
    as_user touch "$data/babelfish_initialized"
  fi
  log "Babelfish: starting TDS on 127.0.0.1:$tds_port (TLS $ssl)"
  as_user "$BBF_PREFIX/bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 120 start >/dev/null
  wait_port "$tds_port" "Babelfish (TDS)" "$data/server.log"
}

if ! port_open "$BBF_TLS_PORT" || ! port_open "$BBF_PLAIN_PORT"; then
  bbf_install
  bbf_start tls 5435 "$BBF_TLS_PORT" on
  bbf_start plain 5436 "$BBF_PLAIN_PORT" off
fi
