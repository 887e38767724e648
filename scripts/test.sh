#!/usr/bin/env bash
# Runs every check and every test, starting the servers the suites need.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

step() { echo; echo "==> $*"; }

step "services"
bash scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (unit, integration, conformance, doc tests)"
cargo test --workspace --all-features

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

echo; echo "all checks passed"
