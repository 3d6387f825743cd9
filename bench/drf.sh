#!/usr/bin/env bash
# The comparison for bench/run.sh, measured on the same machine: Django REST
# framework's TokenAuthentication (bench/drf/) behind gunicorn, with 100,000
# tokens in PostgreSQL, under the same wrk load and the same request rotation.
#
#   bench/drf.sh                  # five rounds of 5 s
#   ROUNDS=3 bench/drf.sh
#
# Needs wrk, python3 with venv, and the Python package registry the first
# time (it installs bench/drf/requirements.txt into target/bench-drf-venv).
# PostgreSQL at BENCH_POSTGRES_URL, where it creates and drops a database.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
PORT="${PORT:-39392}"
# gunicorn's recommended starting point: two sync workers per core, plus one.
WORKERS="${WORKERS:-$(( 2 * $(nproc) + 1 ))}"
source bench/common.sh
venv=target/bench-drf-venv
if [ ! -x "$venv/bin/gunicorn" ]; then
    echo "== drf: installing bench/drf/requirements.txt into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r bench/drf/requirements.txt
fi

work="$(mktemp -d)"
server_pid=""
export DRF_DB="keysmith_bench_drf_$$"
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$DRF_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql -q "$PG_ADMIN" -c "CREATE DATABASE \"$DRF_DB\"" >/dev/null
echo "== drf: seeding $TOKENS_IN_STORE tokens"
(cd bench/drf && "../../$venv/bin/python" seed.py "$TOKENS_IN_STORE" "$work/tokens.txt" "$SAMPLE")

(cd bench/drf && exec "../../$venv/bin/gunicorn" --workers "$WORKERS" --bind "127.0.0.1:$PORT" \
    --log-level warning --chdir . wsgi:application) >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/whoami" || true)
    [ "$code" = 401 ] && break
    sleep 0.1
done
token=$(head -1 "$work/tokens.txt")
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/api/whoami")" = 200 ] \
    || { echo "drf: the server did not accept a seeded token" >&2; tail -20 "$work/server.log" >&2; exit 1; }
echo "   gunicorn up with $WORKERS sync workers"

bench_wrk "http://127.0.0.1:$PORT" /api/whoami "$work/tokens.txt" 3s >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    bench_wrk "http://127.0.0.1:$PORT" /api/whoami "$work/tokens.txt" "$DURATION" \
        | grep '^RESULT' | sed "s/^/drf-whoami#$round /" | tee -a "$work/results.txt"
done
awk "$AWK_MEDIAN"'
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      rps = rps " " v["rps"]; p50 = p50 " " v["p50_us"]; p99 = p99 " " v["p99_us"]; bad = bad + v["non2xx"] + v["errors"] }
    END { printf "   drf whoami, median of the rounds: %d req/s, p50 %.2f ms, p99 %.2f ms (%d errors or non-2xx in all)\n",
          median(rps), median(p50) / 1000, median(p99) / 1000, bad }' "$work/results.txt"
