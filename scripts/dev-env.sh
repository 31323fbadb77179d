# Sourced by the scripts in this folder: installs what the local stand and the tests need
# into a virtualenv at .venv (moto's server; cargo-lambda for the Lambda's build and its
# smoke test) and exports MOTO_SERVER and CARGO_LAMBDA.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
MOTO_REQUIREMENT='moto[server]==5.2.5'
# cargo-lambda's PyPI wheel carries a static binary: no 30-minute `cargo install`.
CARGO_LAMBDA_REQUIREMENT='cargo-lambda==1.9.2'
# The Zig toolchain cargo-lambda cross-links with (scripts/build-lambda.sh only).
ZIG_REQUIREMENT='ziglang==0.13.0'

ensure_moto() {
    if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c 'import moto, flask' 2>/dev/null; then
        echo "==> installing $MOTO_REQUIREMENT into .venv" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_REQUIREMENT"
    fi
    export MOTO_SERVER="$VENV/bin/moto_server"
}

ensure_cargo_lambda() {
    if [ ! -x "$VENV/bin/cargo-lambda" ]; then
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
        echo "==> installing $CARGO_LAMBDA_REQUIREMENT into .venv" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$CARGO_LAMBDA_REQUIREMENT"
    fi
    export CARGO_LAMBDA="$VENV/bin/cargo-lambda"
}
