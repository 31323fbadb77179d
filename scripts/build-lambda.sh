#!/usr/bin/env bash
# Builds the Lambda function's zip: target/lambda/receipt-verifier-lambda/bootstrap.zip, a
# `bootstrap` for the provided.al2023 runtime. arm64 (Graviton) by default; `--x86-64` for
# x86_64 functions. Installs what it needs: cargo-lambda and the Zig toolchain it links
# with (both from PyPI, into .venv; Zig targets Amazon Linux 2023's glibc), and the Rust
# standard library for the target (rustup).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
cd "$ROOT"

ARCH_FLAG=--arm64
TARGET=aarch64-unknown-linux-gnu
case "${1:-}" in
    "" | --arm64) ;;
    --x86-64) ARCH_FLAG=--x86-64; TARGET=x86_64-unknown-linux-gnu ;;
    *) echo "usage: scripts/build-lambda.sh [--arm64|--x86-64]" >&2; exit 2 ;;
esac

ensure_cargo_lambda
if ! "$VENV/bin/python" -c 'import ziglang' 2>/dev/null; then
    echo "==> installing $ZIG_REQUIREMENT into .venv" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$ZIG_REQUIREMENT"
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# cargo-lambda finds Zig as `python3 -m ziglang` when no `zig` is on the PATH.
export PATH="$VENV/bin:$PATH"
echo "==> cargo lambda build --release $ARCH_FLAG --output-format zip" >&2
cargo lambda build --release "$ARCH_FLAG" --output-format zip --bin receipt-verifier-lambda
ls -l target/lambda/receipt-verifier-lambda/bootstrap.zip
