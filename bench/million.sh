#!/usr/bin/env bash
# A million tokens: GET /api/v2/whoami with 1,000,000 tokens in the store,
# rotating through 200,000 of them (all cached) against rotating through
# 10,000 (the figure bench/run.sh states), interleaved in one run with
# /healthz as the ceiling; the server's memory with 10,000 and with 200,000
# tokens cached (so what one cached token costs); and what a cache miss
# costs: a run presenting tokens no request has presented before, each one
# a database read.
#
#   bench/million.sh                        # both backends, five rounds of 5 s per route
#   BACKENDS=sqlite ROUNDS=3 bench/million.sh
#   SKIP_BUILD=1 bench/million.sh           # use the release binaries already built
#   KEEP_SEED=target/million bench/million.sh  # keep the seeded databases there
#                                           # (PostgreSQL's as keysmith_million_seed) and
#                                           # reuse them on the next run
#
# Needs wrk (apt-get install -y wrk); PostgreSQL at BENCH_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/postgres), where it creates and
# drops a database of its own. Seeding a million tokens takes a few minutes
# per backend. Everything runs on 127.0.0.1 and every load run is bounded
# in time.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PORT="${PORT:-39411}"
METRICS_PORT="${METRICS_PORT:-$(( PORT + 1 ))}"
HOT_SMALL="${HOT_SMALL:-10000}"
HOT_LARGE="${HOT_LARGE:-200000}"
TOKENS_IN_STORE="${TOKENS_IN_STORE:-1000000}"
source bench/common.sh
export KEYSMITH_TEST_POSTGRES_URL="${KEYSMITH_TEST_POSTGRES_URL:-$PG_ADMIN}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin keysmith --example bench_seed

work="$(mktemp -d)"
server_pid=""
pg_db=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [ -n "$pg_db" ]; then psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The verifier's count of cached tokens, from the metrics listener.
cached() {
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk '$1 == "keysmith_verify_cache_entries" { print $2 }'
}
mb() { echo $(( $1 / 1024 )); }

for backend in $BACKENDS; do
    seed_dir="${KEEP_SEED:-$work}"
    mkdir -p "$seed_dir"
    case "$backend" in
        sqlite) url="sqlite://$(realpath "$seed_dir")/million.db" ;;
        postgres)
            if [ -n "${KEEP_SEED:-}" ]; then
                db_name=keysmith_million_seed
            else
                db_name="keysmith_million_$$"; pg_db="$db_name"
            fi
            url="${PG_ADMIN%/*}/$db_name" ;;
        *) echo "bench: unknown backend $backend" >&2; exit 2 ;;
    esac
    if [ -s "$seed_dir/$backend-tokens.txt" ]; then
        echo "== $backend: reusing the $(wc -l <"$seed_dir/$backend-tokens.txt") tokens seeded in $seed_dir"
    else
        case "$backend" in
            sqlite) rm -f "$seed_dir/million.db"* ;;
            postgres) psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$db_name\" WITH (FORCE)" -c "CREATE DATABASE \"$db_name\"" >/dev/null ;;
        esac
        echo "== $backend: seeding $TOKENS_IN_STORE tokens"
        started=$(date +%s)
        target/release/examples/bench_seed "$url" "$TOKENS_IN_STORE" "$seed_dir/$backend-tokens.tmp" "$TOKENS_IN_STORE"
        mv "$seed_dir/$backend-tokens.tmp" "$seed_dir/$backend-tokens.txt"
        echo "   seeded in $(( $(date +%s) - started )) s"
    fi
    cp "$seed_dir/$backend-tokens.txt" "$work/all.txt"
    head -n "$HOT_SMALL" "$work/all.txt" >"$work/small.txt"
    head -n "$HOT_LARGE" "$work/all.txt" >"$work/large.txt"
    tail -n +"$(( HOT_LARGE + 1 ))" "$work/all.txt" >"$work/cold.txt"

    start_keysmith "$url" KEYSMITH_METRICS_ADDR="127.0.0.1:$METRICS_PORT"
    idle=$(rss_kb "$server_pid")
    warm_up "$PORT" "$work/small.txt" "$work/warmup.curl"
    LOAD_DURATION=3s load warmup-small /api/v2/whoami "$work/small.txt" >/dev/null
    small_rss=$(rss_kb "$server_pid")
    small_cached=$(cached)
    warm_up "$PORT" "$work/large.txt" "$work/warmup.curl"
    LOAD_DURATION=3s load warmup-large /api/v2/whoami "$work/large.txt" >/dev/null
    large_rss=$(rss_kb "$server_pid")
    large_cached=$(cached)
    echo "   RSS: idle $(mb "$idle") MB; $small_cached tokens cached $(mb "$small_rss") MB; $large_cached cached $(mb "$large_rss") MB"

    # Rounds interleave the routes, each round starting one route later.
    routes=("healthz /healthz small" "small /api/v2/whoami small" "large /api/v2/whoami large")
    for round in $(seq 1 "$ROUNDS"); do
        for k in 0 1 2; do
            read -r name path tokens <<<"${routes[$(( (round - 1 + k) % 3 ))]}"
            load "$name#$round" "$path" "$work/$tokens.txt" | tee -a "$work/results.txt"
        done
    done
    after_rss=$(rss_kb "$server_pid")
    after_cached=$(cached)
    # Misses last: they push hot tokens out. wrk's threads start at random
    # places in 800,000 tokens no request has presented, and one run gets
    # through far fewer than that, so every request is a miss.
    load "miss#1" /api/v2/whoami "$work/cold.txt" | tee -a "$work/results.txt"
    echo "   RSS after the rounds: $(mb "$after_rss") MB with $after_cached cached; after the miss run $(mb "$(rss_kb "$server_pid")") MB with $(cached) cached (peak $(mb "$(hwm_kb "$server_pid")") MB)"
    awk -v backend="$backend" -v small_rss="$small_rss" -v large_rss="$large_rss" \
        -v small_n="$small_cached" -v large_n="$large_cached" "$AWK_MEDIAN"'
        {
            split($1, name, "#"); r = name[1]; round = name[2]
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            rps[r] = rps[r] " " v["rps"]; p50[r] = p50[r] " " v["p50_us"]; p99[r] = p99[r] " " v["p99_us"]
            cpu[r] = cpu[r] " " v["server_cpu_us_per_req"]; db[r] = db[r] " " v["db_cpu_us_per_req"]
            bad[r] += v["non2xx"] + v["errors"]
            if (r != "miss") { rounds[round] = 1; round_rps[r, round] = v["rps"] }
        }
        END {
            printf "   %s, median of the rounds (ratios: median of each round against its own runs):\n", backend
            printf "   %-8s %9s %10s %9s %9s %9s %10s %10s %8s\n", "route", "req/s", "vs healthz", "vs small", "p50 ms", "p99 ms", "cpu us/req", "db us/req", "non-2xx"
            split("healthz small large miss", routes, " ")
            for (k = 1; k <= 4; k++) {
                r = routes[k]; vh = ""; vs = ""
                for (round in rounds) {
                    if (r != "miss") {
                        vh = vh " " round_rps[r, round] / round_rps["healthz", round]
                        vs = vs " " round_rps[r, round] / round_rps["small", round]
                    } else {
                        vh = vh " " median(rps[r]) / round_rps["healthz", round]
                        vs = vs " " median(rps[r]) / round_rps["small", round]
                    }
                }
                printf "   %-8s %9d %9.0f%% %8.0f%% %9.2f %9.2f %10.1f %10.1f %8d\n", r, median(rps[r]), 100 * median(vh), 100 * median(vs),
                    median(p50[r]) / 1000, median(p99[r]) / 1000, median(cpu[r]), median(db[r]), bad[r]
            }
            if (large_n > small_n)
                printf "   memory per cached token: %.0f bytes ((%d - %d) KB / (%d - %d) tokens)\n",
                    (large_rss - small_rss) * 1024 / (large_n - small_n), large_rss, small_rss, large_n, small_n
        }' "$work/results.txt"
    rm -f "$work/results.txt"

    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
    if [ -n "$pg_db" ]; then
        psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null; pg_db=""
    fi
done
