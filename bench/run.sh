#!/usr/bin/env bash
# Bearer-side benchmark: throughput and p50/p99 latency of GET /api/v2/whoami
# and /auth/verify against two references measured in the same run: GET
# /healthz of the same release server, and a bare axum hello-world route
# (examples/bare_axum.rs: no middleware, a fixed 55-byte JSON body), on
# SQLite and PostgreSQL, with 100,000 tokens in the store. Requests rotate
# through SAMPLE of those tokens (the bare route ignores them).
# Everything runs on 127.0.0.1 and every load run is bounded in time.
#
#   bench/run.sh                      # both backends, ten rounds of 5 s per route
#   BACKENDS=sqlite bench/run.sh      # one
#   ROUNDS=3 DURATION=3s bench/run.sh # shorter
#
# Needs wrk (apt-get install -y wrk); PostgreSQL at BENCH_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/postgres), where it creates and
# drops a database of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-10}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PORT="${PORT:-39391}"
BARE_PORT="${BARE_PORT:-$(( PORT + 1 ))}"
source bench/common.sh
# Keep build.rs's view of the environment stable, so this reuses the test build's cfg.
export KEYSMITH_TEST_POSTGRES_URL="${KEYSMITH_TEST_POSTGRES_URL:-$PG_ADMIN}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin keysmith --example bench_seed --example bare_axum

work="$(mktemp -d)"
server_pid=""
bare_pid=""
pg_db=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [ -n "$bare_pid" ]; then kill "$bare_pid" 2>/dev/null || true; wait "$bare_pid" 2>/dev/null || true; fi
    if [ -n "$pg_db" ]; then psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# summarize BACKEND FILE: the median of the rounds for each route, and each
# bearer route against /healthz: the median over the rounds of its ratio to
# the same round's /healthz run (throughput, p99), so a slow stretch of the
# machine compares a route with a ceiling measured beside it.
summarize() {
    awk -v backend="$1" "$AWK_MEDIAN"'
        {
            split($1, name, "#"); r = name[1]; round = name[2]; rounds[round] = 1
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            rps[r] = rps[r] " " v["rps"]; p50[r] = p50[r] " " v["p50_us"]; p99[r] = p99[r] " " v["p99_us"]
            cpu[r] = cpu[r] " " v["server_cpu_us_per_req"]; db[r] = db[r] " " v["db_cpu_us_per_req"]
            round_rps[r, round] = v["rps"]; round_p99[r, round] = v["p99_us"]
        }
        END {
            printf "   %s, median of the rounds (ratios: median of each round against the same round'"'"'s /healthz and bare axum runs):\n", backend
            printf "   %-8s %9s %10s %8s %9s %9s %10s %10s %10s\n", "route", "req/s", "vs healthz", "vs bare", "p50 ms", "p99 ms", "p99 x bare", "cpu us/req", "db us/req"
            split("bare healthz whoami verify", routes, " ")
            for (k = 1; k <= 4; k++) {
                r = routes[k]; ratio = ""; bare = ""; p99x = ""
                for (round in rounds) {
                    ratio = ratio " " round_rps[r, round] / round_rps["healthz", round]
                    bare = bare " " round_rps[r, round] / round_rps["bare", round]
                    p99x = p99x " " round_p99[r, round] / round_p99["bare", round]
                }
                printf "   %-8s %9d %9.0f%% %7.2fx %9.2f %9.2f %10.2f %10.1f %10.1f\n", r, median(rps[r]), 100 * median(ratio), median(bare),
                    median(p50[r]) / 1000, median(p99[r]) / 1000, median(p99x), median(cpu[r]), median(db[r])
            }
        }' "$2"
}

for backend in $BACKENDS; do
    case "$backend" in
        sqlite) url="sqlite://$work/bench.db" ;;
        postgres)
            pg_db="keysmith_bench_$$"
            psql -q "$PG_ADMIN" -c "CREATE DATABASE \"$pg_db\"" >/dev/null
            url="${PG_ADMIN%/*}/$pg_db" ;;
        *) echo "bench: unknown backend $backend" >&2; exit 2 ;;
    esac
    echo "== $backend: seeding $TOKENS_IN_STORE tokens"
    target/release/examples/bench_seed "$url" "$TOKENS_IN_STORE" "$work/tokens.txt" "$SAMPLE"

    start_keysmith "$url"
    echo "   server up, RSS $(( $(rss_kb "$server_pid") / 1024 )) MB"
    target/release/examples/bare_axum "127.0.0.1:$BARE_PORT" >/dev/null 2>&1 &
    bare_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$BARE_PORT/whoami" >/dev/null 2>&1 && break
        sleep 0.1
    done

    # Warm-up: one request per sample token, so the runs measure the cached
    # path (what a deployment sees once its active tokens have been used),
    # the wait for the first flush of their addresses, then a short run of
    # the trivial route.
    warm_up "$PORT" "$work/tokens.txt" "$work/warmup.curl"
    settle "$server_pid"
    LOAD_DURATION=3s load warmup-healthz /healthz "$work/tokens.txt" >/dev/null

    # Rounds interleave the routes, each round starting one route later,
    # so a neighbour's load on the machine, and whatever a route leaves
    # behind for the next (the last-use batch it queued), falls on all of
    # them alike.
    routes=("bare /whoami" "healthz /healthz" "whoami /api/v2/whoami" "verify /auth/verify")
    for round in $(seq 1 "$ROUNDS"); do
        for k in 0 1 2 3; do
            read -r name path <<<"${routes[$(( (round - 1 + k) % 4 ))]}"
            if [ "$name" = bare ]; then
                load "$name#$round" "$path" "$work/tokens.txt" "$BARE_PORT" "$bare_pid" | tee -a "$work/results.txt"
            else
                load "$name#$round" "$path" "$work/tokens.txt" | tee -a "$work/results.txt"
            fi
        done
    done
    echo "   server RSS after the runs: $(( $(rss_kb "$server_pid") / 1024 )) MB (peak $(( $(hwm_kb "$server_pid") / 1024 )) MB)"
    summarize "$backend" "$work/results.txt"
    rm -f "$work/results.txt"

    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
    kill -TERM "$bare_pid"; wait "$bare_pid" || true; bare_pid=""
    if [ "$backend" = postgres ]; then
        psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null; pg_db=""
    fi
    rm -f "$work/bench.db"*
done
