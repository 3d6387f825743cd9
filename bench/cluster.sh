#!/usr/bin/env bash
# Cluster benchmark: three release instances on one PostgreSQL sharing each
# token's rate-limit budget (the ledger exchanged every 200 ms), loaded
# round-robin: one bounded wrk run per instance at once, their throughputs
# added. /auth/verify and GET /api/v2/whoami against GET /healthz of the
# same three instances, in the same run; rounds interleave the routes and
# each ratio is the median over the rounds of a route's throughput against
# the same round's /healthz run.
#
# Every presented token is counted in the cluster's ledger: the budget is
# set high (READS_PER_MINUTE) so the requests measure verification, not
# refusals, while every token still takes a share in every window on every
# instance.
#
#   bench/cluster.sh                       # ten rounds of 5 s per route
#   ROUNDS=3 DURATION=3s bench/cluster.sh  # shorter
#   SKIP_BUILD=1 bench/cluster.sh          # use the release binaries already built
#
# Needs wrk (apt-get install -y wrk) and PostgreSQL at BENCH_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/postgres), where it creates and
# drops a database of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-10}"
BASE_PORT="${BASE_PORT:-39401}"
READS_PER_MINUTE="${READS_PER_MINUTE:-10000000}"
SAMPLE="${SAMPLE:-2000}"
TOKENS_IN_STORE="${TOKENS_IN_STORE:-10000}"
source bench/common.sh
# Split the connections over the three instances; one wrk thread each.
PER_INSTANCE_CONNECTIONS=$(( CONNECTIONS / 3 ))
export KEYSMITH_TEST_POSTGRES_URL="${KEYSMITH_TEST_POSTGRES_URL:-$PG_ADMIN}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin keysmith --example bench_seed

work="$(mktemp -d)"
pids=()
pg_db="keysmith_cluster_bench_$$"
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql -q "$PG_ADMIN" -c "CREATE DATABASE \"$pg_db\"" >/dev/null
url="${PG_ADMIN%/*}/$pg_db"
echo "== seeding $TOKENS_IN_STORE tokens ($SAMPLE presented)"
target/release/examples/bench_seed "$url" "$TOKENS_IN_STORE" "$work/tokens.txt" "$SAMPLE"

for k in 0 1 2; do
    port=$(( BASE_PORT + k ))
    KEYSMITH_CONFIG=/dev/null DATABASE_URL="$url" KEYSMITH_ADDR="127.0.0.1:$port" \
        KEYSMITH_DATA_DIR="$work/data$k" KEYSMITH_LOG="${KEYSMITH_LOG:-warn}" \
        KEYSMITH_READS_PER_MINUTE="$READS_PER_MINUTE" \
        target/release/keysmith serve >"$work/server$k.log" 2>&1 &
    pids+=($!)
done
for k in 0 1 2; do
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$(( BASE_PORT + k ))/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
echo "   three instances up"

# load NAME PATH: one bounded wrk run against each instance at once; prints
# the summed throughput, the worst p99 and the non-2xx answers.
load() {
    local name="$1" path="$2" k clients=()
    for k in 0 1 2; do
        THREADS=1 CONNECTIONS="$PER_INSTANCE_CONNECTIONS" \
            bench_wrk "http://127.0.0.1:$(( BASE_PORT + k ))" "$path" "$work/tokens.txt" \
            "${LOAD_DURATION:-$DURATION}" | grep '^RESULT' >"$work/wrk$k.txt" &
        clients+=($!)
    done
    wait "${clients[@]}"
    cat "$work"/wrk[012].txt | awk -v name="$name" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          rps += v["rps"]; non2xx += v["non2xx"]; errors += v["errors"]; if (v["p99_us"] > p99) p99 = v["p99_us"] }
        END { printf "%s rps=%.0f p99_us=%d non2xx=%d errors=%d\n", name, rps, p99, non2xx, errors }'
}

# Warm-up: every sample token verified once on each instance (cached
# everywhere), then a short run of the trivial route.
for k in 0 1 2; do
    warm_up "$(( BASE_PORT + k ))" "$work/tokens.txt" "$work/warmup$k.curl"
done
LOAD_DURATION=3s load warmup-healthz /healthz >/dev/null

routes=("healthz /healthz" "whoami /api/v2/whoami" "verify /auth/verify")
for round in $(seq 1 "$ROUNDS"); do
    for k in 0 1 2; do
        read -r name path <<<"${routes[$(( (round - 1 + k) % 3 ))]}"
        load "$name#$round" "$path" | tee -a "$work/results.txt"
    done
done

ledger=$(psql -At "$url" -c "SELECT (SELECT COUNT(*) FROM rate_limit_instances) || ' instances, ' || (SELECT COUNT(*) FROM rate_limit_counts) || ' budget rows in the current and last window'")
echo "   ledger: $ledger"
awk "$AWK_MEDIAN"'
    {
        split($1, name, "#"); r = name[1]; round = name[2]; rounds[round] = 1
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        rps[r] = rps[r] " " v["rps"]; p99[r] = p99[r] " " v["p99_us"]; bad[r] += v["non2xx"] + v["errors"]
        round_rps[r, round] = v["rps"]
    }
    END {
        printf "   three instances on PostgreSQL, median of the rounds (ratios: median of each round against its own /healthz run):\n"
        printf "   %-8s %9s %10s %9s %8s\n", "route", "req/s", "vs healthz", "p99 ms", "non-2xx"
        split("healthz whoami verify", routes, " ")
        for (k = 1; k <= 3; k++) {
            r = routes[k]; ratio = ""
            for (round in rounds) ratio = ratio " " round_rps[r, round] / round_rps["healthz", round]
            printf "   %-8s %9d %9.0f%% %9.2f %8d\n", r, median(rps[r]), 100 * median(ratio), median(p99[r]) / 1000, bad[r]
        }
    }' "$work/results.txt"
