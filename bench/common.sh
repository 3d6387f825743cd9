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
