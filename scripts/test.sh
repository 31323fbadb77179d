#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests, and the integration tests
# that start moto's SQS server, bootpay-fake and the worker as real processes.
# Installs moto[server] and cargo-lambda into .venv, and Bootpay's SDKs into .venv-sdk and
# tests/sdk/node, first if they are missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
cd "$ROOT"
ensure_moto
ensure_sdks
ensure_cargo_lambda

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> scripts/validate-infra.sh" >&2
bash scripts/validate-infra.sh
if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run" >&2
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "==> cargo test (cargo-nextest not installed)" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
