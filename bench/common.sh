# Shared by bench/run.sh and bench/drf.sh (sourced, from the repository
# root): the load both use, so their figures compare.

TOKENS_IN_STORE="${TOKENS_IN_STORE:-100000}"
SAMPLE="${SAMPLE:-10000}"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
PG_ADMIN="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install -y wrk)" >&2; exit 2; }

# bench_wrk BASE_URL PATH TOKENS_FILE DURATION: one bounded wrk run with
# bench/wrk.lua; prints wrk's output (its RESULT line among it).
bench_wrk() {
    BENCH_PATH="$2" TOKENS="$3" timeout 60 \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$4" --timeout 5s -s bench/wrk.lua "$1"
}

# An awk function: the median of a space-separated list of numbers.
AWK_MEDIAN='
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }'

# What the Keysmith benches measure a server process by (PID from the caller).
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# CPU time (user + system, in clock ticks) the server has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))
# CPU time of every PostgreSQL process on this machine (0 when none runs):
# on PostgreSQL the database's share of the work shares the same cores.
db_ticks() {
    local total=0 pid
    for pid in $(pgrep -x postgres || true); do
        total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
    done
    echo "$total"
}

# per_request TICKS REQUESTS: microseconds per request, one decimal.
per_request() { echo "$1 $2 $TICK_US" | awk '{ printf "%.1f", $1 * $3 / $2 }'; }

# load NAME PATH TOKENS_FILE [PORT PID]: one bounded wrk run against the
# server at PORT, process PID (default: the caller's $PORT and $server_pid);
# prints its RESULT line plus the server's CPU time per request (robust to
# a busy neighbour, which throughput and latency are not) and PostgreSQL's.
load() {
    local name="$1" path="$2" tokens="$3" port="${4:-$PORT}" pid="${5:-$server_pid}"
    local line before after requests db_before db_after
    before=$(cpu_ticks "$pid")
    db_before=$(db_ticks)
    line=$(bench_wrk "http://127.0.0.1:$port" "$path" "$tokens" "${LOAD_DURATION:-$DURATION}" | grep '^RESULT')
    after=$(cpu_ticks "$pid")
    db_after=$(db_ticks)
    requests=$(echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
    [ "$requests" -gt 0 ] || requests=1
    echo "$name $line server_cpu_us_per_req=$(per_request $(( after - before )) "$requests") db_cpu_us_per_req=$(per_request $(( db_after - db_before )) "$requests") load=$(cut -d' ' -f1 /proc/loadavg)"
}

# warm_up PORT TOKENS_FILE SCRATCH: one /auth/verify per token in the file
# (32 at a time), so the runs that follow measure the cached path.
warm_up() {
    local started
    awk -v port="$1" '{ if (NR > 1) print "next"; printf "url = \"http://127.0.0.1:%s/auth/verify\"\nheader = \"Authorization: Bearer %s\"\noutput = \"/dev/null\"\n", port, $0 }' \
        "$2" >"$3"
    started=$(date +%s.%N)
    timeout 600 curl --no-progress-meter --parallel --parallel-max 32 -K "$3"
    printf '   warm-up: %s tokens verified once in %.1f s\n' "$(wc -l <"$2")" "$(echo "$(date +%s.%N) - $started" | bc)"
}

# settle PID: waits (at most a minute) until the server at PID has been
# nearly idle (under 5 % of a core) for a second, and says how long that
# took. After a warm-up the first flush writes every token's new client
# address, one transaction each (10,000 tokens: about 4 s of CPU); a run
# measured during it would charge that one-time work to whichever route
# ran then.
settle() {
    local started before after
    started=$(date +%s.%N)
    # The flush starts within 4 s (FLUSH_EVERY) of the uses.
    sleep 5
    for _ in $(seq 1 60); do
        before=$(cpu_ticks "$1"); sleep 1; after=$(cpu_ticks "$1")
        [ $(( (after - before) * TICK_US )) -lt 50000 ] && break
    done
    printf '   settled: the first flush was written %.1f s after the warm-up\n' "$(echo "$(date +%s.%N) - $started" | bc)"
}

# start_keysmith DATABASE_URL [VAR=VALUE...]: `keysmith serve` (the release
# build) on 127.0.0.1:$PORT with that database and the extra variables,
# logging to $work/server.log; sets server_pid and returns once /healthz
# answers.
start_keysmith() {
    local url="$1"
    shift
    env KEYSMITH_CONFIG=/dev/null DATABASE_URL="$url" KEYSMITH_ADDR="127.0.0.1:$PORT" \
        KEYSMITH_DATA_DIR="$work/data" KEYSMITH_LOG="${KEYSMITH_LOG:-warn}" "$@" \
        target/release/keysmith serve >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
}
