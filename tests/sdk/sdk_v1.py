"""Drives Bootpay's python v1 SDK (PyPI `bootpay` 1.x, module `bootpay.client`) against a
Bootpay v1 server and prints one JSON object per call on stdout:
`{"call": NAME, "ok": BOOL, "result": ...}`, where `ok` is the SDK's own test of success
(`status` 200 in the envelope) and `result` is the envelope the SDK returned, or the
exception it raised.

Usage: sdk_v1.py V1_URL APPLICATION_ID PRIVATE_KEY

The server must hold the receipts tests/sdk.rs loads: r-paid (status 1, 3000), r-confirm
(status 2), r-unpaid (status 2) and r-partial (status 1, 10000); r-missing must be unknown.
Run it with the virtualenv's Python that scripts/dev-env.sh's ensure_sdks exports as
SDK_PYTHON.
"""

import importlib.metadata
import json
import sys

try:
    from bootpay.client import Bootpay
except ImportError as error:
    sys.exit(f"sdk_v1.py: {error}; install the SDKs with scripts/dev-env.sh's ensure_sdks")


def emit(call, ok, result):
    print(json.dumps({"call": call, "ok": ok, "result": result}, ensure_ascii=False), flush=True)


def call(name, action):
    try:
        result = action()
    except Exception as error:  # e.g. a body that is not JSON; report, do not stop
        emit(name, False, {"exception": type(error).__name__, "message": str(error)})
        return
    emit(name, isinstance(result, dict) and result.get("status") == 200, result)


def client(url, application_id, private_key):
    bootpay = Bootpay(application_id, private_key, mode="production")
    # An instance attribute, so the class's real hosts stay untouched.
    bootpay.base_url = {"production": url}
    return bootpay


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    url, application_id, private_key = sys.argv[1:]
    emit("sdk", True, {"package": "bootpay", "version": importlib.metadata.version("bootpay")})

    bootpay = client(url, application_id, private_key)
    call("token", bootpay.get_access_token)
    call("token_again", bootpay.get_access_token)
    call("lookup_paid", lambda: bootpay.verify("r-paid"))
    call("lookup_unknown", lambda: bootpay.verify("r-missing"))
    call("submit", lambda: bootpay.submit("r-confirm"))
    call("submit_again", lambda: bootpay.submit("r-confirm"))
    # cancel()'s default cancel_id is one uuid4 drawn when the module was imported, so every
    # cancel that leaves it out shares one id: each call here names its own.
    call("cancel_full", lambda: bootpay.cancel(
        "r-paid", name="test", reason="full", cancel_id="f-1"))
    call("cancel_again", lambda: bootpay.cancel(
        "r-paid", name="test", reason="again", cancel_id="f-2"))
    call("cancel_partial_1", lambda: bootpay.cancel("r-partial", price=1000, cancel_id="p-1"))
    call("cancel_partial_2", lambda: bootpay.cancel("r-partial", price=2000, cancel_id="p-2"))
    call("cancel_partial_repeat", lambda: bootpay.cancel(
        "r-partial", price=2000, cancel_id="p-2"))
    call("cancel_above_remainder", lambda: bootpay.cancel(
        "r-partial", price=7001, cancel_id="p-3"))
    call("cancel_unpaid", lambda: bootpay.cancel("r-unpaid", cancel_id="u-1"))
    call("lookup_partial", lambda: bootpay.verify("r-partial"))

    wrong = client(url, application_id, "wrong-" + private_key)
    call("token_wrong_key", wrong.get_access_token)


if __name__ == "__main__":
    main()
