#!/usr/bin/env bash
# Throughput and cost of the release worker draining a backlog of purchases on a local
# stand (an SQS emulator and bootpay-fake with a fixed latency). Options are passed to
# scripts/bench.py; `scripts/bench.sh --help` lists them. `scripts/bench.sh --lambda ...`
# benchmarks the Lambda function instead (scripts/bench_lambda.py; `--lambda --help`), and
# `scripts/bench.sh --webhook ...` the webhook ingress (scripts/bench_webhook.py) and
# `scripts/bench.sh --scale-out ...` two workers on one queue against one (scripts/bench_scaleout.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
cd "$ROOT"
ensure_moto

echo "==> building receipt-verifier, receipt-verifier-lambda and bootpay-fake (release)" >&2
cargo build --quiet --release --bins

if [ "${1:-}" = "--webhook" ]; then
    shift
    cargo build --quiet --release --example webhook_load
    exec "$VENV/bin/python" "$ROOT/scripts/bench_webhook.py" --bin-dir "$ROOT/target/release" "$@"
fi
if [ "${1:-}" = "--scale-out" ]; then
    shift
    exec "$VENV/bin/python" "$ROOT/scripts/bench_scaleout.py" --bin-dir "$ROOT/target/release" "$@"
fi
if [ "${1:-}" = "--lambda" ]; then
    shift
    exec "$VENV/bin/python" "$ROOT/scripts/bench_lambda.py" --bin-dir "$ROOT/target/release" "$@"
fi
exec "$VENV/bin/python" "$ROOT/scripts/bench.py" --bin-dir "$ROOT/target/release" "$@"
