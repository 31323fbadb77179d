"""Drives Bootpay's python v2 SDK (PyPI `bootpay-backend`, module `bootpay_backend`) against a
Bootpay server and prints one JSON object per call on stdout:
`{"call": NAME, "ok": BOOL, "result": ...}`, where `ok` is the SDK's own test of success
(no `error_code` in the answer) and `result` is what the SDK returned, or the exception it
raised.

Usage: sdk_v2.py V2_URL token APPLICATION_ID PRIVATE_KEY
       sdk_v2.py V2_URL basic CLIENT_KEY SECRET_KEY

The server must hold the receipts tests/sdk.rs loads: r-paid (status 1, 3000), r-confirm
(status 2), r-unpaid (status 2) and r-partial (status 1, 10000); r-missing must be unknown.
Run it with the virtualenv's Python that scripts/dev-env.sh's ensure_sdks exports as
SDK_PYTHON.
"""

import importlib.metadata
import json
import sys

try:
    from bootpay_backend import BootpayBackend
except ImportError as error:
    sys.exit(f"sdk_v2.py: {error}; install the SDKs with scripts/dev-env.sh's ensure_sdks")


def emit(call, ok, result):
    print(json.dumps({"call": call, "ok": ok, "result": result}, ensure_ascii=False), flush=True)


def call(name, action):
    try:
        result = action()
    except Exception as error:  # the SDK raises for local checks; report, do not stop
        emit(name, False, {"exception": type(error).__name__, "message": str(error)})
        return
    emit(name, isinstance(result, dict) and "error_code" not in result, result)


def client(url, auth, key, secret):
    if auth == "token":
        bootpay = BootpayBackend(application_id=key, private_key=secret, mode="production")
    else:
        bootpay = BootpayBackend(client_key=key, secret_key=secret, mode="production")
    # An instance attribute, so the class's real hosts stay untouched.
    bootpay.BASE_URL = {"production": url}
    return bootpay


def main():
    if len(sys.argv) != 5 or sys.argv[2] not in ("token", "basic"):
        sys.exit(__doc__)
    url, auth, key, secret = sys.argv[1:]
    emit("sdk", True, {"package": "bootpay-backend",
                       "version": importlib.metadata.version("bootpay-backend")})

    bootpay = client(url, auth, key, secret)
    call("token", bootpay.get_access_token)
    call("token_again", bootpay.get_access_token)
    call("lookup_paid", lambda: bootpay.receipt_payment("r-paid"))
    call("lookup_unknown", lambda: bootpay.receipt_payment("r-missing"))
    call("confirm", lambda: bootpay.confirm_payment("r-confirm"))
    call("confirm_again", lambda: bootpay.confirm_payment("r-confirm"))
    call("cancel_full", lambda: bootpay.cancel_payment(
        receipt_id="r-paid", cancel_username="test", cancel_message="full"))
    call("cancel_again", lambda: bootpay.cancel_payment(
        receipt_id="r-paid", cancel_username="test", cancel_message="again"))
    call("cancel_partial_1", lambda: bootpay.cancel_payment(
        receipt_id="r-partial", cancel_price=1000, cancel_id="p-1"))
    call("cancel_partial_2", lambda: bootpay.cancel_payment(
        receipt_id="r-partial", cancel_price=2000, cancel_id="p-2"))
    call("cancel_partial_repeat", lambda: bootpay.cancel_payment(
        receipt_id="r-partial", cancel_price=2000, cancel_id="p-2"))
    call("cancel_above_remainder", lambda: bootpay.cancel_payment(
        receipt_id="r-partial", cancel_price=7001, cancel_id="p-3"))
    call("cancel_unpaid", lambda: bootpay.cancel_payment(receipt_id="r-unpaid"))
    call("lookup_partial", lambda: bootpay.receipt_payment("r-partial"))

    wrong = client(url, auth, key, "wrong-" + secret)
    call("token_wrong_key", wrong.get_access_token)
    if auth == "basic":
        # With keys the SDK asks for no token: the first real call is what gets refused.
        call("lookup_wrong_key", lambda: wrong.receipt_payment("r-paid"))


if __name__ == "__main__":
    main()
