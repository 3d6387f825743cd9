#!/usr/bin/env bash
# The settings page with 10,000 tokens (README, Performance): `cargo bench
# --bench tokens_page` on SQLite, then on PostgreSQL, RUNS times in a row
# (the README quotes two runs). Prints per backend a table of p50, p99,
# mean and HTML size per request, the ratios to the references measured in
# the same run (/healthz, the 1-token page), the weight of a row, and the
# two targets: p50 under 5 ms for every 10,000-token request, the 50-row
# page under 40 KB. Exits non-zero when a target is missed.
#
#   bench/tokens_page.sh              # both backends, two runs
#   RUNS=1 bench/tokens_page.sh
#   TOKENS_PAGE_HTML=/tmp/pages bench/tokens_page.sh   # keep the pages measured
#
# PostgreSQL at BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres), where the bench creates and
# drops a database of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_ADMIN="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export KEYSMITH_TEST_POSTGRES_URL="${KEYSMITH_TEST_POSTGRES_URL:-$PG_ADMIN}"
status=0
for run in $(seq "${RUNS:-2}"); do
    echo "== run $run, commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
    cargo bench --quiet --bench tokens_page || status=$?
done
exit "$status"
