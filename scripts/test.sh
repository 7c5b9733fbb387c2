#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every test of every crate
# (unit tests, and integration tests against real SQLite files and a real server).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== MCP peers (pinned servers and clients for the interoperability tests)"
./scripts/install-peers.sh

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt
# Summarise in one line for CI readers.
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
