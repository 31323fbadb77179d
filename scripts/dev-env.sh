# Sourced by the scripts in this folder: installs what the local stand and the tests need
# into a virtualenv at .venv (moto's server; cargo-lambda for the Lambda's build and its
# smoke test) and exports MOTO_SERVER and CARGO_LAMBDA; installs Bootpay's official server
# SDKs for tests/sdk.rs and exports SDK_PYTHON and SDK_NODE_DIR.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
MOTO_REQUIREMENT='moto[server]==5.2.5'
# cargo-lambda's PyPI wheel carries a static binary: no 30-minute `cargo install`.
CARGO_LAMBDA_REQUIREMENT='cargo-lambda==1.9.2'
# The Zig toolchain cargo-lambda cross-links with (scripts/build-lambda.sh only).
ZIG_REQUIREMENT='ziglang==0.13.0'
# Bootpay's python SDKs, v2 (module bootpay_backend) and v1 (module bootpay): different
# module names, so one virtualenv holds both. Kept apart from .venv, whose requests and
# urllib3 pins belong to moto.
SDK_VENV="$ROOT/.venv-sdk"
SDK_PYTHON_REQUIREMENTS=('bootpay-backend==2.9.0' 'bootpay==1.0.7')
# Bootpay's Node SDK, pinned by tests/sdk/node/package.json and its package-lock.json.
SDK_NODE_PACKAGE_DIR="$ROOT/tests/sdk/node"

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

# Installs Bootpay's SDKs only when missing or at another version: the python ones into
# .venv-sdk, the Node one with `npm ci` from tests/sdk/node's lock file.
ensure_sdks() {
    if ! "$SDK_VENV/bin/python" - "${SDK_PYTHON_REQUIREMENTS[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted
             for name, wanted in (requirement.split("==") for requirement in sys.argv[1:])))
PY
    then
        echo "==> installing ${SDK_PYTHON_REQUIREMENTS[*]} into .venv-sdk" >&2
        [ -x "$SDK_VENV/bin/python" ] || python3 -m venv "$SDK_VENV"
        "$SDK_VENV/bin/pip" install --quiet --disable-pip-version-check "${SDK_PYTHON_REQUIREMENTS[@]}"
    fi
    export SDK_PYTHON="$SDK_VENV/bin/python"

    local wanted installed
    wanted="$(cd "$SDK_NODE_PACKAGE_DIR" && node -p "require('./package.json').dependencies['@bootpay/backend-js']")"
    installed="$(cd "$SDK_NODE_PACKAGE_DIR" && node -p "require('./node_modules/@bootpay/backend-js/package.json').version" 2>/dev/null || true)"
    if [ "$installed" != "$wanted" ]; then
        echo "==> installing @bootpay/backend-js@$wanted into tests/sdk/node (npm ci)" >&2
        (cd "$SDK_NODE_PACKAGE_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
    fi
    export SDK_NODE_DIR="$SDK_NODE_PACKAGE_DIR"
}
