#!/usr/bin/env bash
# Throwaway Redis + PostgreSQL 15 instances for tests, living in one directory.
#
#   scripts/services.sh start DIR   # stops stale instances, starts both, waits, prints export lines
#   scripts/services.sh stop  DIR   # stops both; removes nothing else
#   eval "$(scripts/services.sh start /tmp/vc-test)"   # progress goes to stderr
#
# Redis: 127.0.0.1:${VCENTER_TEST_REDIS_PORT:-6391}, no persistence, daemonized, pidfile in DIR,
# 64 databases (each pytest-xdist worker of the API tier uses its own: tests/conftest.py).
# PostgreSQL: initdb'd in DIR/pgdata (owned by the postgres OS user when run as root),
# 127.0.0.1:${VCENTER_TEST_PG_PORT:-5439}, fsync=off, autovacuum=off, unix socket in DIR/pgsock;
# database vcenter_test owned by role vcenter (password vcenter).
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
REDIS_PORT="${VCENTER_TEST_REDIS_PORT:-6391}"
PG_PORT="${VCENTER_TEST_PG_PORT:-5439}"
WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-30}"

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
CMD="$1"
mkdir -p "$2"
DIR="$(cd "$2" && pwd)"

REDIS_PID="$DIR/redis.pid"
REDIS_LOG="$DIR/redis.log"
PGDATA="$DIR/pgdata"
PGSOCK="$DIR/pgsock"
PG_LOG="$DIR/postgres.log"

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
# initdb/postgres refuse to run as root: run them as the postgres OS user.
as_pg() {
  if [ "$IS_ROOT" = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

wait_gone() { # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
  return 1
}

# pid of the process listening on 127.0.0.1:PORT (empty if none)
listener_pid() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

redis_ping() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }

stop_redis() {
  local pid=""
  [ -f "$REDIS_PID" ] && pid="$(cat "$REDIS_PID" 2>/dev/null || true)"
  if alive "$pid"; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || { kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
    log "redis: stopped (pid $pid)"
  else
    log "redis: not running in $DIR"
  fi
  rm -f "$REDIS_PID"
}

stop_pg() {
  local pid=""
  [ -f "$PGDATA/postmaster.pid" ] && pid="$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
  if alive "$pid"; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 20 stop >/dev/null 2>&1 || kill -QUIT "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || { kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
    log "postgres: stopped (pid $pid)"
  else
    log "postgres: not running in $DIR"
  fi
}

# A stale instance that services.sh started from another directory (e.g. a test run killed
# with -9) still holding our port: stop it. Anything else on the port: refuse, never kill.
started_by_us() { # pid name
  local d
  if [ "$2" = redis ]; then
    d="$(readlink "/proc/$1/cwd" 2>/dev/null || true)"          # redis --dir DIR
    [ -n "$d" ] && [ "$(cat "$d/redis.pid" 2>/dev/null)" = "$1" ]
  else
    d="$(readlink "/proc/$1/cwd" 2>/dev/null || true)"          # postmaster cwd = DIR/pgdata
    [ -n "$d" ] && [ "$(basename "$d")" = pgdata ] && [ -d "$(dirname "$d")/pgsock" ] \
      && [ "$(head -n1 "$d/postmaster.pid" 2>/dev/null)" = "$1" ]
  fi
}

free_port() { # port name
  local pid comm
  pid="$(listener_pid "$1")"
  [ -n "$pid" ] || return 0
  comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  if ! started_by_us "$pid" "$2"; then
    die "port $1 is held by pid $pid ($comm, cwd $(readlink "/proc/$pid/cwd" 2>/dev/null)), not by a services.sh $2: stop it or choose another port (VCENTER_TEST_REDIS_PORT / VCENTER_TEST_PG_PORT)"
  fi
  log "$2: stopping stale services.sh instance on port $1 (pid $pid, $(readlink "/proc/$pid/cwd"))"
  if [ "$2" = redis ]; then
    redis-cli -h 127.0.0.1 -p "$1" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  else
    kill -INT "$pid" 2>/dev/null || true   # postmaster: fast shutdown
  fi
  wait_gone "$pid" 10 || { kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
}

start_redis() {
  command -v redis-server >/dev/null || die "redis-server not installed (run scripts/install.sh)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$DIR" \
    --save '' --appendonly no --protected-mode yes --databases 64 >/dev/null
}

start_pg() {
  [ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb missing (run scripts/install.sh)"
  rm -rf "$PGDATA" "$PGSOCK"
  mkdir -p "$PGDATA" "$PGSOCK"
  if [ "$IS_ROOT" = 1 ]; then
    : >"$PG_LOG"
    chown postgres:postgres "$PGDATA" "$PGSOCK" "$PG_LOG"
    chmod 700 "$PGDATA"
    chmod a+x "$DIR"   # postgres must be able to traverse DIR (mktemp -d makes it 0700)
    runuser -u postgres -- test -w "$PGDATA" \
      || die "the postgres user cannot reach $PGDATA (a parent dir is not traversable): use a dir under /tmp"
  fi
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
  cat >>"$PGDATA/postgresql.conf" <<CONF

# --- throwaway test instance (scripts/services.sh) ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
# Tests drop and re-create their databases WITH (FORCE), which may not end an autovacuum worker
# (a superuser's process): "must be a member of the role whose process is being terminated".
autovacuum = off
CONF
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t "$WAIT_SECONDS" start >/dev/null \
    || { tail -n 30 "$PG_LOG" >&2 2>/dev/null || true; die "postgres did not start"; }
  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PG_PORT" -U postgres -d postgres)
  "${psql[@]}" -c "CREATE ROLE vcenter LOGIN CREATEDB PASSWORD 'vcenter'" >/dev/null
  "${psql[@]}" -c "CREATE DATABASE vcenter_test OWNER vcenter" >/dev/null
}

wait_for() { # name check-fn
  local i
  for ((i = 0; i < WAIT_SECONDS * 10; i++)); do "$2" && return 0; sleep 0.1; done
  return 1
}

case "$CMD" in
  start)
    stop_redis
    stop_pg
    free_port "$REDIS_PORT" redis
    free_port "$PG_PORT" postgres
    start_redis
    start_pg
    wait_for redis redis_ping || { tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true; die "redis did not answer on $REDIS_PORT"; }
    log "redis: up on 127.0.0.1:$REDIS_PORT (pid $(cat "$REDIS_PID"))"
    wait_for postgres pg_ready || die "postgres did not answer on $PG_PORT"
    log "postgres: up on 127.0.0.1:$PG_PORT (pid $(head -n1 "$PGDATA/postmaster.pid")), db vcenter_test"
    echo "export VCENTER_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export VCENTER_TEST_PG_URL=postgresql+psycopg://vcenter:vcenter@127.0.0.1:$PG_PORT/vcenter_test"
    ;;
  stop)
    stop_redis
    stop_pg
    ;;
  status)
    redis_ping && log "redis: up on $REDIS_PORT" || log "redis: down"
    pg_ready && log "postgres: up on $PG_PORT" || log "postgres: down"
    ;;
  *) usage ;;
esac
