"""Benchmark of the Lambda function: the release `receipt-verifier-lambda` draining a
backlog of purchases, one execution environment, invoked the way an SQS event source
mapping invokes it.

This script plays both sides Lambda would: a Runtime API (the endpoints the function's
`lambda_runtime` client calls: /next, /response, /error, /init/error) and the event source
mapping (receive up to the batch size with every attribute, invoke with a deadline, delete
what the function reported successful). It measures the function's init (process start to
its first /next), CPU and peak RSS (wait4 after SIGTERM), and requests per decision: the
function's own SQS and Bootpay requests (from its per-invocation EMF documents, checked
against bootpay-fake's count) and the mapping's receives and deletes. Every decision is
read back and checked as scripts/bench.py does. Run it through `scripts/bench.sh --lambda`.
Uses only the standard library and boto3.
"""

import argparse
import json
import os
import queue
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared stand: emulators, bootpay-fake, checks)
from bench import BenchError, log  # noqa: E402

FUNCTION_TIMEOUT_SECS = 30
PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    """The Lambda Runtime API for one execution environment, invocations one at a time."""

    def __init__(self):
        self.pending = queue.Queue()
        self.done = {}
        self.cond = threading.Condition()
        self.first_next_at = None
        self.init_error = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def reply(self, status, body=b"", headers=()):
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the function was stopped while it waited for an invocation

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    return self.reply(404)
                with api.cond:
                    if api.first_next_at is None:
                        api.first_next_at = time.monotonic()
                        api.cond.notify_all()
                request_id, payload, deadline_ms = api.pending.get()
                if request_id is None:
                    return self.reply(503)
                self.reply(200, payload, [
                    ("Content-Type", "application/json"),
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                    ("Lambda-Runtime-Invoked-Function-Arn",
                     "arn:aws:lambda:us-east-1:123456789012:function:bench"),
                    ("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"),
                ])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_error = body.decode(errors="replace")
                    with api.cond:
                        api.cond.notify_all()
                    return self.reply(202)
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    with api.cond:
                        api.done[parts[1]] = (parts[2], body)
                        api.cond.notify_all()
                    return self.reply(202)
                return self.reply(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for_init(self, proc, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.first_next_at is None:
                if self.init_error is not None:
                    raise BenchError(f"the function's init failed: {self.init_error}")
                if proc.poll() is not None:
                    raise BenchError(f"the function exited with status {proc.returncode} at init")
                if time.monotonic() > deadline:
                    raise BenchError("the function did not ask for an invocation in time")
                self.cond.wait(0.05)
        return self.first_next_at

    def invoke(self, event, timeout):
        request_id = str(uuid.uuid4())
        deadline_ms = int((time.time() + timeout) * 1000)
        self.pending.put((request_id, json.dumps(event).encode(), deadline_ms))
        end = time.monotonic() + timeout
        with self.cond:
            while request_id not in self.done:
                left = end - time.monotonic()
                if left <= 0:
                    return "timeout", None
                self.cond.wait(left)
            kind, body = self.done.pop(request_id)
        return kind, json.loads(body) if body else None

    def close(self):
        self.pending.put((None, b"", 0))
        self.server.shutdown()


def record(message, arn):
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {"stringValue": v.get("StringValue"), "stringListValues": [],
                   "binaryListValues": [], "dataType": v.get("DataType")}
            for name, v in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": bench.REGION,
    }


def function_env(args, endpoint, api_url, results, runtime_port):
    drop = ("AWS_", "BOOTPAY_", "WORKER_", "BATCH_", "REQUEUE_", "DEADLINE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        RESULT_QUEUE_URL=results,
        WORKER_CONCURRENCY=str(args.record_concurrency),
        RUST_LOG="warn",
        AWS_LAMBDA_LOG_FORMAT="JSON",
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{runtime_port}",
        AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        AWS_LAMBDA_FUNCTION_VERSION="1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=bench.REGION,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_EC2_METADATA_DISABLED="true",
        BOOTPAY_API_URL=api_url,
        BOOTPAY_APPLICATION_ID=bench.APPLICATION_ID,
        BOOTPAY_PRIVATE_KEY=bench.PRIVATE_KEY,
    )
    return env


def run_one(args, batch, work):
    n = args.purchases
    procs = bench.Processes()
    api = RuntimeApi()
    try:
        emulator, endpoint, version = bench.start_emulator(args.sqs, procs, work)
        sqs = bench.sqs_client(endpoint)
        purchases, results, dlq = bench.create_queues(sqs)
        arn = sqs.get_queue_attributes(QueueUrl=purchases, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        fake, api_url = bench.start_fake(args.bin_dir, procs, work, n, args.latency_ms)
        log(f"batch {batch}: enqueueing {n} purchases on {args.sqs}")
        bench.enqueue(sqs, purchases, n, 8)

        env = function_env(args, endpoint, api_url, results, api.port)
        spawned = time.monotonic()
        # BENCH_WORKER_WRAPPER runs the function under a tool (see scripts/bench.py).
        wrapper = os.environ.get("BENCH_WORKER_WRAPPER", "").split()
        function = procs.adopt("receipt-verifier-lambda",
                               [*wrapper, str(args.bin_dir / "receipt-verifier-lambda")], env,
                               work / "function.log")
        init_secs = api.wait_for_init(function) - spawned
        log(f"batch {batch}: function ready in {1000 * init_secs:.1f} ms; draining")

        receives = deletes = invocations = failed_invocations = reported_failed = 0
        started = time.monotonic()
        idle_since = None
        while True:
            if function.poll() is not None:
                raise BenchError(f"the function exited with status {function.returncode}")
            messages = []
            while len(messages) < batch:
                got = sqs.receive_message(
                    QueueUrl=purchases, MaxNumberOfMessages=min(10, batch - len(messages)),
                    WaitTimeSeconds=0 if messages else 1, AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                receives += 1
                if not got:
                    break
                messages.extend(got)
            if not messages:
                if sum(bench.queue_counts(sqs, purchases)) == 0:
                    break
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > bench.STALL_SECS:
                    raise BenchError("purchases stay invisible but undecided")
                continue
            idle_since = None
            invocations += 1
            kind, response = api.invoke({"Records": [record(m, arn) for m in messages]},
                                        FUNCTION_TIMEOUT_SECS)
            if kind != "response":
                failed_invocations += 1
                continue
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures") or []}
            reported_failed += len(failed)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                sqs.delete_message_batch(QueueUrl=purchases, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done[start:start + 10])])
                deletes += 1
        drain = time.monotonic() - started
        hwm_kib = bench.peak_rss_kib(function.pid)
        status, rusage = bench.reap(function)
        cpu_secs = rusage.ru_utime + rusage.ru_stime

        emf = []
        for line in (work / "function.log").read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and "_aws" in doc:
                emf.append(doc)
        function_sqs = sum(d["SqsRequests"] for d in emf)
        function_bootpay = sum(d["BootpayRequests"] for d in emf)
        fake_counts = bench.fake_stats(api_url)
        fake_total = sum(fake_counts.get(k, 0)
                         for k in ("token_requests", "receipt_requests", "confirm_requests"))

        decisions = bench.read_decisions(sqs, results, 8)
        check = bench.check_decisions(decisions, n)
        check["purchase_queue_left"] = sum(bench.queue_counts(sqs, purchases))
        check["dlq"] = sum(bench.queue_counts(sqs, dlq))
        check["emf_documents"] = len(emf)
        check["ok"] = (check["ok"] and check["purchase_queue_left"] == 0 and check["dlq"] == 0
                       and len(emf) == invocations and function_bootpay == fake_total)
        return {
            "batch_size": batch,
            "sqs_version": version,
            "purchases": n,
            "latency_ms": args.latency_ms,
            "record_concurrency": args.record_concurrency,
            "init_ms": 1000 * init_secs,
            "invocations": invocations,
            "failed_invocations": failed_invocations,
            "records_reported_failed": reported_failed,
            "decisions_per_sec": n / drain if drain > 0 else None,
            "function_cpu_secs": cpu_secs,
            "function_cpu_ms_per_record": 1000 * cpu_secs / n,
            "function_sys_share": rusage.ru_stime / cpu_secs if cpu_secs else None,
            "function_peak_rss_mib": rusage.ru_maxrss / 1024,
            "function_vm_hwm_mib": None if hwm_kib is None else hwm_kib / 1024,
            "function_exit_status": status,
            "function_sqs_requests_per_decision": function_sqs / n,
            "mapping_sqs_requests_per_decision": (receives + deletes) / n,
            "bootpay_requests_per_decision": function_bootpay / n,
            "fake_requests": fake_total,
            "check": check,
        }
    finally:
        api.close()
        procs.close()


FIGURES = [
    ("init ms", "init_ms", ".1f"),
    ("CPU ms/record", "function_cpu_ms_per_record", ".3f"),
    ("of which system", "function_sys_share", ".0%"),
    ("peak RSS MiB", "function_peak_rss_mib", ".1f"),
    ("decisions/s", "decisions_per_sec", ".0f"),
    ("function SQS req/decision", "function_sqs_requests_per_decision", ".3f"),
    ("mapping SQS req/decision", "mapping_sqs_requests_per_decision", ".3f"),
    ("Bootpay req/decision", "bootpay_requests_per_decision", ".4f"),
]


def print_run(r, out):
    c = r["check"]
    print(f"batch size {r['batch_size']}: {r['invocations']} invocations "
          f"({r['failed_invocations']} failed, {r['records_reported_failed']} records reported "
          f"failed)", file=out)
    for label, key, spec in FIGURES:
        print(f"  {label:26} {bench.fmt(r[key], spec)}", file=out)
    print(f"  {'check':26} {'OK' if c['ok'] else 'WRONG'}: {c['decisions']} decisions for "
          f"{r['purchases']} purchases, {c['rejects']} rejects for {c['expected_rejects']} "
          f"tampered; {c['duplicates']} duplicates; {c['purchase_queue_left']} left; "
          f"{c['dlq']} dead letters; {c['emf_documents']} EMF documents; Bootpay "
          f"{r['bootpay_requests_per_decision'] * r['purchases']:.0f} by the function, "
          f"{r['fake_requests']} by bootpay-fake", file=out)
    for line in c["wrong"]:
        print(f"    {line}", file=out)
    print(file=out)


def main(argv):
    p = argparse.ArgumentParser(prog="scripts/bench.sh --lambda",
                                description="Benchmarks the release Lambda function.")
    p.add_argument("--purchases", type=int, default=2000, metavar="N")
    p.add_argument("--latency-ms", type=int, default=50, metavar="L")
    p.add_argument("--batch-size", default="10,100", metavar="B[,B...]",
                   help="records per invocation (default 10,100)")
    p.add_argument("--record-concurrency", type=int, default=64, metavar="C",
                   help="WORKER_CONCURRENCY of the function (default 64)")
    p.add_argument("--sqs", choices=["moto", "awsim"],
                   default=os.environ.get("BENCH_SQS") or ("awsim" if bench.find_awsim() else "moto"))
    p.add_argument("--repeat", type=int, default=1, metavar="R")
    p.add_argument("--bin-dir", type=Path, default=bench.ROOT / "target" / "release")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch_size.split(",") if b.strip()]

    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    bench.become_subreaper()
    info = bench.machine()
    runs = []
    for batch in (b for _ in range(args.repeat) for b in batches):
        work = Path(tempfile.mkdtemp(prefix=f"bench-lambda-b{batch}-"))
        runs.append(run_one(args, batch, work))
    if args.json:
        json.dump({"machine": info, "runs": runs}, sys.stdout, indent=2)
        print()
        return 0 if all(r["check"]["ok"] for r in runs) else 1
    out = sys.stdout
    print(f"\nmachine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}\n"
          f"build:   receipt-verifier-lambda {info['revision']}, release profile\n"
          f"stand:   {runs[0]['sqs_version'] if runs else args.sqs} for SQS; bootpay-fake "
          f"--latency-ms {args.latency_ms}; {args.purchases} purchases enqueued first; "
          f"WORKER_CONCURRENCY {args.record_concurrency}; one execution environment\n", file=out)
    for r in runs:
        print_run(r, out)
    if args.repeat > 1:
        for batch in batches:
            group = [r for r in runs if r["batch_size"] == batch and r["check"]["ok"]]
            print(f"batch size {batch}, median (min-max) of {len(group)} OK runs:", file=out)
            for label, key, spec in FIGURES:
                values = sorted(r[key] for r in group if r[key] is not None)
                if values:
                    print(f"  {label:26} {format(statistics.median(values), spec):>8}  "
                          f"({format(values[0], spec)}-{format(values[-1], spec)})", file=out)
            print(file=out)
    return 0 if all(r["check"]["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
