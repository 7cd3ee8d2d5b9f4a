#!/usr/bin/env bash
# What `make test` (and so CI) runs: install, start throwaway Redis + PostgreSQL,
# run every suite (even after a failure), print a timing table, exit non-zero on failure.
# `make test-fast` runs the same with `fast`: the unit and in-process API tiers only.
#
# The API tier runs in VCENTER_TEST_WORKERS pytest-xdist processes (default 3, also on 2 cores:
# its tests wait on threads, timers and the databases much of the time), each with its own
# PostgreSQL database and Redis database (tests/conftest.py). The tiers on libvirtd and the lab
# share one lab network and run in one process. The services listen on
# VCENTER_TEST_REDIS_PORT / VCENTER_TEST_PG_PORT (default 6391 / 5439, scripts/services.sh).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[test] %s\n' "$*"; }

# Compiled modules are written and shared (__pycache__, git-ignored): with
# PYTHONDONTWRITEBYTECODE set (as in many CI images) each of the run's Python processes (xdist
# workers, the servers and agents the tests start) compiled every module of ours and pytest
# rewrote every test module again: collecting tests/api cost 7-8 s of CPU per worker, 3.6 s so.
unset PYTHONDONTWRITEBYTECODE

WORKERS="${VCENTER_TEST_WORKERS:-3}"
# worksteal: an idle worker takes queued tests from a busy one, so the few long tests do not
# leave one worker finishing alone
XDIST=(-n "$WORKERS" --dist worksteal)
# The unit tier in two processes: one left a core idle for its 25 s (its tests are pure CPU and
# short waits), the longest stretch of make test-fast with one core unused.
UNIT_XDIST=(-n 2 --dist worksteal)

# scripts/test.sh [fast]: every suite (make test, CI), or the fast tiers only (make test-fast)
MODE="${1:-all}"
case "$MODE" in all|fast) ;; *) log "usage: scripts/test.sh [fast]"; exit 2 ;; esac

scripts/install.sh || { log "install failed"; exit 1; }

SERVICES_DIR="$(mktemp -d /tmp/vc-test.XXXXXX)"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  scripts/services.sh stop "$SERVICES_DIR" >/dev/null 2>&1 \
    || scripts/services.sh stop "$SERVICES_DIR" || true
  rm -rf "$SERVICES_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

EXPORTS="$(scripts/services.sh start "$SERVICES_DIR")" || { log "services failed to start"; exit 1; }
eval "$EXPORTS"
export VCENTER_TEST_REDIS_URL VCENTER_TEST_PG_URL
log "services in $SERVICES_DIR: $VCENTER_TEST_REDIS_URL $VCENTER_TEST_PG_URL"

# does DIR hold pytest test files?
has_tests() {
  [ -d "$1" ] && [ -n "$(find "$1" -type f \( -name 'test_*.py' -o -name '*_test.py' \) -print -quit)" ]
}

NAMES=() RESULTS=() TIMES=()
FAILED=0
T_PASSED=0 T_FAILED=0 T_SKIPPED=0

now() { date +%s.%N; }

record() { # name result seconds
  NAMES+=("$1"); RESULTS+=("$2"); TIMES+=("$3")
}

# add the counts from pytest's closing line ("== 3 passed, 1 failed in 0.5s ==")
count_pytest() {
  local line n
  line="$(grep -E '([0-9]+ (passed|failed|errors?|skipped)|no tests ran).* in [0-9.]+s' "$1" | tail -n1 || true)"
  n="$(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1)"; T_PASSED=$((T_PASSED + ${n:-0}))
  n="$(grep -oE '[0-9]+ failed' <<<"$line" | cut -d' ' -f1)"; T_FAILED=$((T_FAILED + ${n:-0}))
  n="$(grep -oE '[0-9]+ errors?' <<<"$line" | cut -d' ' -f1)"; T_FAILED=$((T_FAILED + ${n:-0}))
  n="$(grep -oE '[0-9]+ skipped' <<<"$line" | cut -d' ' -f1)"; T_SKIPPED=$((T_SKIPPED + ${n:-0}))
}

# run_suite NAME KIND [DIR] -- CMD...   KIND: plain | pytest
run_suite() {
  local name="$1" kind="$2" dir="" start rc secs result out
  shift 2
  if [ "$kind" = pytest ]; then dir="$1"; shift; fi
  [ "$1" = "--" ] && shift
  printf '\n===== %s: %s\n' "$name" "$*"
  out="$SERVICES_DIR/$name.out"
  start="$(now)"
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  secs="$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
  if [ "$kind" = pytest ]; then
    count_pytest "$out"
    if [ "$rc" -eq 5 ] && ! has_tests "$dir"; then
      result="empty (no test files)"; rc=0
    elif [ "$rc" -eq 5 ]; then
      result="FAILED (no tests collected)"
    fi
  fi
  if [ -z "${result:-}" ]; then
    if [ "$rc" -eq 0 ]; then result="passed"; else result="FAILED (exit $rc)"; fi
  fi
  [ "$rc" -ne 0 ] && FAILED=1
  record "$name" "$result" "$secs"
}

if [ "$MODE" = fast ]; then
  # make test-fast: the unit and in-process API tiers, fuzzing left out.
  run_suite unit pytest tests/unit -- .venv/bin/python -m pytest tests/unit -q -p no:cacheprovider "${UNIT_XDIST[@]}"
  run_suite api pytest tests/api -- \
    .venv/bin/python -m pytest tests/api -q -p no:cacheprovider -m "not fuzz" --durations=10 "${XDIST[@]}"
else
  run_suite lint plain -- scripts/lint.sh
  # the OpenAPI document the app builds, linted by Redocly's recommended rules and ours
  run_suite openapi plain -- scripts/lint-openapi.sh
  # the compose file requires its secrets: validate with placeholders unless they are set
  run_suite compose plain -- env VCENTER_DB_PASSWORD="${VCENTER_DB_PASSWORD:-placeholder}" \
    VCENTER_REDIS_PASSWORD="${VCENTER_REDIS_PASSWORD:-placeholder}" \
    docker-compose -f docker-compose.yml config -q
  run_suite unit pytest tests/unit -- .venv/bin/python -m pytest tests/unit -q -p no:cacheprovider "${UNIT_XDIST[@]}"
  # Tests by kind, the fast ones first. The tiers after unit use real services; a failed test
  # there is rerun once (reported in pytest's summary). Each lab-backed tier shares one lab.
  for tier in api system libvirtd lab e2e; do
    parallel=()
    [ "$tier" = api ] && parallel=("${XDIST[@]}")
    run_suite "$tier" pytest "tests/$tier" -- \
      .venv/bin/python -m pytest "tests/$tier" -q -p no:cacheprovider --durations=20 --reruns 1 --reruns-delay 2 -rR "${parallel[@]}"
  done
fi

printf '\n%-12s %-28s %8s\n' suite result seconds
printf '%-12s %-28s %8s\n' ------------ ---------------------------- --------
for i in "${!NAMES[@]}"; do
  printf '%-12s %-28s %8s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}"
done
echo
if [ "$FAILED" -ne 0 ]; then
  log "some suites FAILED"
else
  log "all suites passed"
fi
echo "tests: $T_PASSED passed, $T_FAILED failed, $T_SKIPPED skipped"
exit "$FAILED"
