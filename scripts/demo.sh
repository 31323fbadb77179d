#!/usr/bin/env bash
# Local stand: moto's SQS and DynamoDB, bootpay-fake serving fixtures/demo-receipts.json
# and sending its webhooks to the webhook ingress, a purchase queue with a dead-letter
# queue, the ledger table, and the worker deciding the sample purchases in
# fixtures/demo-purchases.jsonl. Then a receipt's later life: a virtual account's deposit,
# a refund after fulfilment, a purchase enqueued twice. Prints each decision next to the
# one expected, the ledger, the dead letters and the queues' backlog, then stops
# everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dev-env.sh"
cd "$ROOT"
ensure_moto

echo "==> building receipt-verifier and bootpay-fake" >&2
cargo build --quiet --bins
BIN="$ROOT/target/debug"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Port 0: moto binds a free port itself and names it in its log, so nothing can take the
# port between choosing and binding it.
"$MOTO_SERVER" -H 127.0.0.1 -p 0 >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_EC2_METADATA_DISABLED=true
# The keys Bootpay recommends: a client key and a secret key, sent as HTTP Basic.
export BOOTPAY_CLIENT_KEY=demo-client-key BOOTPAY_SECRET_KEY=demo-secret-key

"$BIN/bootpay-fake" --receipts fixtures/demo-receipts.json >"$WORK/fake.out" 2>"$WORK/fake.log" &
PIDS+=($!)
for _ in $(seq 300); do
    grep -q '^BOOTPAY_API_URL=' "$WORK/fake.out" 2>/dev/null && break
    sleep 0.1
done
export BOOTPAY_API_URL="$(sed -n 's/^BOOTPAY_API_URL=//p' "$WORK/fake.out")"
for _ in $(seq 600); do
    grep -q 'Running on http://127.0.0.1:' "$WORK/moto.log" 2>/dev/null && break
    sleep 0.1
done
MOTO_PORT="$(sed -n 's|.*Running on http://127.0.0.1:\([0-9]*\).*|\1|p' "$WORK/moto.log" | head -n1)"
if [ -z "$MOTO_PORT" ] || [ -z "$BOOTPAY_API_URL" ]; then
    echo "moto or bootpay-fake did not start; their logs:" >&2
    cat "$WORK/moto.log" "$WORK/fake.log" >&2
    exit 1
fi
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1

echo "==> creating queues on moto ($AWS_ENDPOINT_URL): purchases (DLQ after 3 receives), decisions" >&2
eval "$("$VENV/bin/python" - <<'PY'
import json, os, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
dlq = sqs.create_queue(QueueName="purchases-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
purchases = sqs.create_queue(QueueName="purchases", Attributes={
    "VisibilityTimeout": "30",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}),
})["QueueUrl"]
decisions = sqs.create_queue(QueueName="decisions")["QueueUrl"]
print(f"export PURCHASE_QUEUE_URL={purchases} RESULT_QUEUE_URL={decisions}")
PY
)"

export LEDGER_TABLE=demo-ledger
echo "==> creating the ledger table $LEDGER_TABLE on moto's DynamoDB" >&2
"$BIN/receipt-verifier" ledger init >&2

echo "==> starting the webhook ingress; bootpay-fake sends its webhooks there" >&2
WEBHOOK_ADDR=127.0.0.1:0 WEBHOOK_ALLOWED_SOURCES=127.0.0.1/32 \
    "$BIN/receipt-verifier" webhook >"$WORK/webhook.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
    grep -q 'Webhook ingress started' "$WORK/webhook.log" 2>/dev/null && break
    sleep 0.1
done
WEBHOOK_URL="http://$(sed -n 's/.*Webhook ingress started\. addr=\([^ ]*\).*/\1/p' "$WORK/webhook.log")"
FAKE="${BOOTPAY_API_URL%/v2}"
# Control calls on bootpay-fake: what a buyer, a merchant's refund or Bootpay would do.
fake() {
    "$VENV/bin/python" - "$FAKE/_fake/$2" "$1" "${3:-{\}}" <<'PY'
import sys, urllib.request
url, method, body = sys.argv[1:4]
request = urllib.request.Request(url, data=body.encode(), method=method,
                                 headers={"Content-Type": "application/json"})
urllib.request.urlopen(request).read()
PY
}
fake PUT webhooks "{\"v2_url\": \"$WEBHOOK_URL/webhooks/bootpay\"}"

echo "==> enqueueing the sample purchases (one malformed on purpose)" >&2
"$BIN/receipt-verifier" enqueue --unchecked --file fixtures/demo-purchases.jsonl

echo "==> starting the worker (log: $WORK/worker.log)" >&2
REQUEUE_BASE_DELAY_SECS=5 "$BIN/receipt-verifier" run >"$WORK/worker.log" 2>&1 &
WORKER=$!
PIDS+=("$WORKER")

# Collects N decisions from the result queue (deleting them) and prints them next to
# what was expected: `decisions N "receipt=decision/reason[/repeat] ..."`.
decisions() {
    : >"$WORK/decisions.jsonl"
    for _ in $(seq 60); do
        "$BIN/receipt-verifier" results --json --delete --wait 1 >>"$WORK/decisions.jsonl"
        [ "$(wc -l <"$WORK/decisions.jsonl")" -ge "$1" ] && break
    done
    EXPECTED="$2" "$VENV/bin/python" - "$WORK/decisions.jsonl" <<'PY'
import json, os, sys
expected = dict(e.split("=") for e in os.environ["EXPECTED"].split())
seen = {}
for line in open(sys.argv[1]):
    body = json.loads(line)["body"]
    seen[body["receipt_id"]] = body
print(f"  {'RECEIPT':18} {'ORDER':8} {'PRICE':>6} {'PAID':>6}  {'DECISION':9} {'REASON':20} EXPECTED")
bad = 0
for rid, want in expected.items():
    d = seen.get(rid)
    got = f"{d['decision']}/{d['reason']}" + ("/repeat" if d.get("repeat") else "") if d else "none"
    ok = "ok" if got == want else "WRONG"
    bad += got != want
    d = d or {}
    paid = d.get("cancelled_price", d.get("paid_price", "-"))
    print(f"  {rid:18} {d.get('order_id','-'):8} {d.get('price','-'):>6} {paid:>6}  "
          f"{d.get('decision','-'):9} {d.get('reason','-'):20} {want} {ok}")
sys.exit(1 if bad else 0)
PY
}

echo
echo "Decisions (r-vbank-1006 awaits a virtual-account deposit: parked in the ledger, no decision yet):"
decisions 6 "r-paid-1001=fulfill/verified r-tampered-1002=reject/price_mismatch \
r-cancelled-1003=reject/cancelled r-replayed-1004=reject/order_mismatch \
r-confirm-1005=fulfill/verified r-missing-1007=reject/receipt_not_found"
for _ in $(seq 100); do
    grep -q "Awaiting the virtual account's deposit" "$WORK/worker.log" && break
    sleep 0.1
done

echo
echo "A receipt's later life: the buyer pays into the virtual account, r-paid-1001 is"
echo "refunded after fulfilment, and r-confirm-1005 is enqueued a second time"
echo "(PAID shows what was cancelled on a revoke):"
fake POST receipts/r-vbank-1006/deposit
fake POST receipts/r-paid-1001/cancel
"$BIN/receipt-verifier" enqueue --file - >/dev/null <<'JSON'
{"receipt_id": "r-confirm-1005", "order_id": "o-1005", "price": 12000, "currency": "KRW", "event_id": "evt-1005"}
JSON
decisions 3 "r-vbank-1006=fulfill/verified r-paid-1001=revoke/cancelled \
r-confirm-1005=fulfill/verified/repeat"

echo
echo "The ledger (receipt-verifier ledger list --state …; mismatches are not recorded):"
for state in fulfilled revoked rejected; do
    "$BIN/receipt-verifier" ledger list --state "$state" 2>/dev/null | sed 's/^/  /'
done

echo
echo "Dead letters:"
for _ in $(seq 30); do
    "$BIN/receipt-verifier" dlq peek --max 10 2>/dev/null | grep -q r-broken && break
    sleep 0.5
done
"$BIN/receipt-verifier" dlq peek --max 10 2>/dev/null

echo
echo "Queues:"
"$BIN/receipt-verifier" stats

kill -TERM "$WORKER"
wait "$WORKER" && echo && echo "worker stopped cleanly on SIGTERM (exit 0); its log lines for the decisions:" \
    && grep 'Decision published' "$WORK/worker.log" | sed 's/^/  /' | cut -c1-220
