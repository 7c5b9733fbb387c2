#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test of every crate
# (unit tests, and integration tests against real SQLite files, a real PostgreSQL server and
# a real Warden server).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that need a backend fail (never skip) when it is missing.
export WARDEN_REQUIRE_BACKENDS=1
# A one-off build gains nothing from incremental compilation, whose caches cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== PostgreSQL (the storage tests run on it as well as on SQLite)"
export WARDEN_TEST_POSTGRES_URL="${WARDEN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
postgres_ready() {
    if command -v pg_isready >/dev/null; then
        pg_isready -q -d "$WARDEN_TEST_POSTGRES_URL"
    else
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
    fi
}
if ! postgres_ready; then
    if command -v pg_ctlcluster >/dev/null; then
        echo "PostgreSQL is not answering; starting cluster 15/main"
        pg_ctlcluster 15 main start || true
        for _ in $(seq 1 30); do postgres_ready && break; sleep 1; done
    fi
fi
if ! postgres_ready; then
    echo "error: PostgreSQL is not reachable at $WARDEN_TEST_POSTGRES_URL; start it or set WARDEN_TEST_POSTGRES_URL" >&2
    exit 1
fi

# Analytics
echo "== ClickHouse (the analytics tests feed and query it; installed and started if missing)"
if [ -z "${WARDEN_TEST_CLICKHOUSE_URL:-}" ]; then
    ./scripts/clickhouse.sh
    export WARDEN_TEST_CLICKHOUSE_URL=http://127.0.0.1:18123
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== MCP peers (pinned servers and clients for the interoperability tests)"
./scripts/install-peers.sh

echo "== cargo test"
# --show-output: the fault tests print what they counted (acknowledged, refused, delivered).
cargo test --workspace --locked --no-fail-fast -- --show-output 2>&1 | tee target/test-output.txt
# Summarise in one line for CI readers.
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
