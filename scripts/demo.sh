#!/usr/bin/env bash
# Local stand: moto's SQS server, bootpay-fake serving fixtures/demo-receipts.json, a
# purchase queue with a dead-letter queue, and the worker deciding the sample purchases
# in fixtures/demo-purchases.jsonl. Prints each decision next to the one expected, the
# dead letters, and the queues' backlog, then stops everything.
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

echo "==> enqueueing the sample purchases (one malformed on purpose)" >&2
"$BIN/receipt-verifier" enqueue --unchecked --file fixtures/demo-purchases.jsonl

echo "==> starting the worker (log: $WORK/worker.log)" >&2
REQUEUE_BASE_DELAY_SECS=5 "$BIN/receipt-verifier" run >"$WORK/worker.log" 2>&1 &
WORKER=$!
PIDS+=("$WORKER")

EXPECTED="r-paid-1001=fulfill/verified r-tampered-1002=reject/price_mismatch \
r-cancelled-1003=reject/cancelled r-replayed-1004=reject/order_mismatch \
r-confirm-1005=fulfill/verified r-missing-1007=reject/receipt_not_found"
: >"$WORK/decisions.jsonl"
for _ in $(seq 60); do
    "$BIN/receipt-verifier" results --json --delete --wait 1 >>"$WORK/decisions.jsonl"
    [ "$(wc -l <"$WORK/decisions.jsonl")" -ge 6 ] && break
done

echo
echo "Decisions (r-vbank-1006 awaits a virtual-account deposit, so it gets none yet):"
EXPECTED="$EXPECTED" "$VENV/bin/python" - "$WORK/decisions.jsonl" <<'PY'
import json, os, sys
expected = dict(e.split("=") for e in os.environ["EXPECTED"].split())
seen = {}
for line in open(sys.argv[1]):
    body = json.loads(line)["body"]
    seen[body["receipt_id"]] = body
print(f"  {'RECEIPT':18} {'ORDER':8} {'PRICE':>6} {'PAID':>6}  {'DECISION':9} {'REASON':18} EXPECTED")
bad = 0
for rid, want in expected.items():
    d = seen.get(rid)
    got = f"{d['decision']}/{d['reason']}" if d else "none"
    ok = "ok" if got == want else "WRONG"
    bad += got != want
    d = d or {}
    print(f"  {rid:18} {d.get('order_id','-'):8} {d.get('price','-'):>6} {d.get('paid_price','-'):>6}  "
          f"{d.get('decision','-'):9} {d.get('reason','-'):18} {want} {ok}")
sys.exit(1 if bad else 0)
PY

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
