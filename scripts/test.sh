#!/usr/bin/env bash
# Runs every check and every test, starting the servers the suites need, then
# the chaos harness's short profile (docs/reliability.md).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

step() { echo; echo "==> $*"; }

stop_mongo() {
    for pidfile in .venv-mongo/secantus.pid .venv-mongo/secantus-rs.pid; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
}
trap stop_mongo EXIT

step "services"
bash scripts/services.sh
export SUNDIAL_TEST_MONGO_URL=${SUNDIAL_TEST_MONGO_URL:-mongodb://127.0.0.1:${SUNDIAL_MONGO_PORT:-27018}/sundial_test}
export SUNDIAL_TEST_MONGO_RS_URL=${SUNDIAL_TEST_MONGO_RS_URL:-mongodb://127.0.0.1:${SUNDIAL_MONGO_RS_PORT:-27019}/sundial_test}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "each facade feature compiles on its own, without warnings"
for feature in "" sqlite postgres mysql redis mongo async threadpool admin metrics cli test-util; do
    out=$(cargo check -q -p sundial --no-default-features ${feature:+--features $feature} 2>&1) || { echo "$out"; exit 1; }
    if grep -q "^warning" <<<"$out"; then echo "feature '$feature':"; echo "$out"; exit 1; fi
done

step "the declared rust-version builds every crate (with the locked dependencies)"
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
rustup toolchain install "$msrv" --profile minimal --no-self-update >/dev/null 2>&1 \
    || rustup toolchain list | grep -q "^$msrv" \
    || { echo "cannot install Rust $msrv (rust-version in Cargo.toml)"; exit 1; }
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo "+$msrv" check -q --workspace --all-features --locked

step "cargo test (unit, integration, conformance, doc tests)"
cargo test --workspace --all-features --no-fail-fast

step "chaos, short profile: 3 workers on SQLite, Redis and PostgreSQL, 40 s each, every fault (fails on a duplicate or a lost slot)"
cargo run -q -p sundial-integration-tests --bin sundial-chaos -- --profile short --seed "${SUNDIAL_CHAOS_SEED:-1}"

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

echo; echo "all checks passed"
