# Sourced by the scripts in this folder: installs what the local stand and the tests need
# (moto's SQS server, in a virtualenv at .venv) and exports MOTO_SERVER.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
MOTO_REQUIREMENT='moto[server]==5.2.5'

ensure_moto() {
    if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c 'import moto, flask' 2>/dev/null; then
        echo "==> installing $MOTO_REQUIREMENT into .venv" >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_REQUIREMENT"
    fi
    export MOTO_SERVER="$VENV/bin/moto_server"
}
