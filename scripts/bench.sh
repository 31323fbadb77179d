#!/usr/bin/env bash
# Throughput and cost of the release worker draining a backlog of purchases on a local
# stand (an SQS emulator and bootpay-fake with a fixed latency). Options are passed to
# scripts/bench.py; `scripts/bench.sh --help` lists them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
cd "$ROOT"
ensure_moto

echo "==> building receipt-verifier and bootpay-fake (release)" >&2
cargo build --quiet --release --bins

exec "$VENV/bin/python" "$ROOT/scripts/bench.py" --bin-dir "$ROOT/target/release" "$@"
