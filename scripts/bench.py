"""Benchmark: the release worker draining a backlog of purchases on a local stand.

For each concurrency value it starts a fresh SQS emulator (moto or awsim) and bootpay-fake
with a fixed latency, enqueues N purchase events, then starts `receipt-verifier run` and
measures, through the worker's /metrics, how fast it decides them and what each decision
costs (CPU, memory, SQS and Bootpay requests). It then reads every decision back from the
result queue and checks it. Run it through scripts/bench.sh, which builds the binaries.
Uses only the standard library and boto3.
"""

import argparse
import concurrent.futures
import ctypes
import json
import os
import platform
import select
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
APPLICATION_ID = "bench-application-id"
LEDGER_TABLE = "bench-ledger"
PRIVATE_KEY = "bench-private-key"
CLIENT_KEY = "bench-client-key"
SECRET_KEY = "bench-secret-key"
PRICE = 3000
TAMPERED_PAID = 100
POLL_SECS = 0.05
STARTUP_POLL_SECS = 0.005
STALL_SECS = 60.0
CALIBRATION_SCRAPES = 200
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


def log(message):
    print(f"==> {message}", file=sys.stderr, flush=True)


# ---- machine ----


def machine():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0))
    return {"nproc": nproc, "cpu": model, "kernel": platform.release(), "revision": revision()}


def revision():
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}{' (modified)' if dirty else ''}" if rev else None


def loadavg():
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def cpu_ticks(pid):
    """utime + stime of a live process, in clock ticks (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


# ---- processes ----


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on port {port} within {timeout:.0f}s")


class Adopted:
    """A process started through a short-lived shell and adopted by this one (a child
    subreaper), so that this script can os.wait4 it.

    Linux carries a process's peak RSS across fork and exec, so a worker forked straight
    from this Python process would report Python's own peak RSS (tens of MiB) in its
    ru_maxrss. Forked from a small shell instead, its ru_maxrss is its own.
    """

    def __init__(self, name, argv, env, log_path):
        self.bench_name = name
        self.returncode = None
        self.rusage = None
        shell = subprocess.Popen(
            ["/bin/sh", "-c", 'log=$1; shift; "$@" >"$log" 2>&1 </dev/null & echo $!', "sh",
             str(log_path), *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        out, _ = shell.communicate(timeout=30)
        self.pid = int(out.decode().strip())

    def poll(self):
        if self.returncode is None:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.bench_name, timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum):
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    stdout = None


class Processes:
    """Every process the benchmark starts; all are stopped by close()."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, env=None, stdout=None, stderr=None):
        # Own session: a Ctrl-C reaches only this script, which then stops them in order.
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        proc.bench_name = name
        self.procs.append(proc)
        return proc

    def adopt(self, name, argv, env, log_path):
        proc = Adopted(name, argv, env, log_path)
        self.procs.append(proc)
        return proc

    def close(self):
        # Newest first, one at a time: the worker stops while SQS and Bootpay still answer.
        for proc in reversed(self.procs):
            if proc.returncode is None and proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self.procs.clear()


def become_subreaper():
    """Orphaned descendants are re-parented to this process (Linux PR_SET_CHILD_SUBREAPER)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def rss_breakdown_kib(pid):
    """RssAnon (heap, stacks) and RssFile (mapped executable and libraries) of a live
    process, from /proc/PID/status."""
    found = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("RssAnon", "RssFile"):
                found[key] = int(line.split()[1])
    except OSError:
        pass
    return found


def peak_rss_kib(pid):
    """VmHWM of a live process: the peak RSS of its current program image."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# ---- SQS emulators ----


def find_awsim():
    found = shutil.which("awsim")
    if found:
        return found
    candidate = Path.home() / ".cargo" / "bin" / "awsim"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def emulator_version(kind, log_path):
    if kind == "moto":
        try:
            return f"moto {metadata.version('moto')}"
        except metadata.PackageNotFoundError:
            return "moto"
    # awsim has no --version; its start-up banner names it ("AWSim v0.8.0").
    try:
        for word in log_path.read_text(errors="replace").split():
            if word.startswith("v") and word[1:2].isdigit():
                return f"awsim {word[1:]}"
    except OSError:
        pass
    return "awsim"


def start_emulator(kind, procs, work):
    port = free_port()
    logfile = open(work / f"{kind}.log", "wb")
    if kind == "moto":
        moto = os.environ.get("MOTO_SERVER") or str(ROOT / ".venv" / "bin" / "moto_server")
        argv = [moto, "-H", "127.0.0.1", "-p", str(port)]
    else:
        # No --data-dir: state in memory only, nothing persisted between runs.
        argv = [find_awsim(), "--bind", "127.0.0.1", "--port", str(port), "--log-level", "warn"]
    proc = procs.start(kind, argv, stdout=logfile, stderr=subprocess.STDOUT)
    logfile.close()
    wait_for_port(port, proc, kind)
    return proc, f"http://127.0.0.1:{port}", emulator_version(kind, work / f"{kind}.log")


def sqs_client(endpoint, pool=16):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(
            max_pool_connections=pool, retries={"max_attempts": 8, "mode": "standard"}
        ),
    )


def create_queues(sqs):
    deadline = time.monotonic() + 30
    while True:
        try:
            sqs.list_queues()
            break
        except Exception:  # noqa: BLE001 - the emulator may still be starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    dlq = sqs.create_queue(QueueName="bench-purchases-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    purchases = sqs.create_queue(
        QueueName="bench-purchases",
        Attributes={
            "VisibilityTimeout": "60",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
        },
    )["QueueUrl"]
    # Long visibility so reading the decisions back never sees one twice.
    results = sqs.create_queue(
        QueueName="bench-decisions", Attributes={"VisibilityTimeout": "43200"}
    )["QueueUrl"]
    return purchases, results, dlq


def queue_counts(sqs, url):
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return (
        int(attrs.get("ApproximateNumberOfMessages", 0)),
        int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


# ---- purchases and receipts ----


def tampered(i):
    return i % 10 == 7


def purchase(i):
    return {
        "receipt_id": f"r-bench-{i:06d}",
        "order_id": f"o-bench-{i:06d}",
        "price": PRICE,
        "currency": "KRW",
        "event_id": f"evt-bench-{i:06d}",
        "metadata": {"user_id": f"u-{i % 997}", "sku": "gems-3000"},
    }


def receipt(i):
    rid = f"r-bench-{i:06d}"
    return {
        "receipt_id": rid,
        "order_id": f"o-bench-{i:06d}",
        "price": TAMPERED_PAID if tampered(i) else PRICE,
        "tax_free": 0,
        "cancelled_price": 0,
        "cancelled_tax_free": 0,
        "order_name": "보석 3000개",
        "company_name": "벤치 상점",
        "gateway_url": "https://gw.bootpay.co.kr",
        "metadata": {},
        "sandbox": False,
        "pg": "나이스페이먼츠",
        "method": "카드",
        "method_symbol": "card",
        "method_origin": "카드",
        "method_origin_symbol": "card",
        "currency": "KRW",
        "requested_at": "2024-05-01T10:00:00+09:00",
        "purchased_at": "2024-05-01T10:00:31+09:00",
        "status": 1,
        "status_locale": "결제완료",
        "receipt_url": f"https://door.bootpay.co.kr/receipt/{rid}",
        "card_data": {
            "tid": f"T-BENCH-{i:06d}",
            "card_approve_no": f"{30000000 + i}",
            "card_no": "5365********1001",
            "card_quota": "00",
            "card_company_code": "CCSS",
            "card_company": "삼성카드",
            "card_interest": "0",
            "card_type": "신용",
            "card_owner_type": "개인",
            "receipt_url": f"https://door.bootpay.co.kr/receipt/{rid}",
            "point": 0,
        },
    }


def start_fake(bin_dir, procs, work, n, latency_ms):
    fixture = work / "receipts.json"
    fixture.write_text(json.dumps({"receipts": [receipt(i) for i in range(n)]}))
    env = dict(os.environ)
    env.update(
        BOOTPAY_APPLICATION_ID=APPLICATION_ID, BOOTPAY_PRIVATE_KEY=PRIVATE_KEY,
        BOOTPAY_CLIENT_KEY=CLIENT_KEY, BOOTPAY_SECRET_KEY=SECRET_KEY, RUST_LOG="warn"
    )
    stderr = open(work / "bootpay-fake.log", "wb")
    proc = procs.start(
        "bootpay-fake",
        [
            str(bin_dir / "bootpay-fake"),
            "--receipts",
            str(fixture),
            "--latency-ms",
            str(latency_ms),
            "--listen",
            "127.0.0.1:0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    stderr.close()
    deadline = time.monotonic() + 60
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(b"BOOTPAY_API_URL="):
                return proc, line.decode().strip().split("=", 1)[1]
            if not line:
                break
        elif proc.poll() is not None:
            break
    raise BenchError(f"bootpay-fake did not print BOOTPAY_API_URL (see {work}/bootpay-fake.log)")


def enqueue(sqs, url, n, threads):
    batches = [list(range(start, min(start + 10, n))) for start in range(0, n, 10)]

    def send(batch):
        entries = [{"Id": str(i), "MessageBody": json.dumps(purchase(i))} for i in batch]
        for _ in range(5):
            failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
            if not failed:
                return
            retry = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in retry]
            time.sleep(0.2)
        raise BenchError(f"SQS kept refusing {len(entries)} purchase events: {failed}")

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(send, b) for b in batches]:
            future.result()


# ---- the worker's /metrics ----


def scrape(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def metric_sum(text, name):
    """Sums every sample of `name` (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest[:1] not in ("{", " "):
            continue
        total += float(line.rsplit(" ", 1)[1])
    return total


def metric_by_label(text, name, label):
    out = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels = line[len(name) + 1 : line.index("}")]
        value = float(line.rsplit(" ", 1)[1])
        key = "?"
        for part in labels.split(","):
            k, _, v = part.partition("=")
            if k == label:
                key = v.strip('"')
        out[key] = out.get(key, 0.0) + value
    return out


def fake_stats(api_url):
    base = api_url.rsplit("/v2", 1)[0]
    with urllib.request.urlopen(f"{base}/_fake/stats", timeout=10) as response:
        stats = json.loads(response.read())
    stats.pop("receipts", None)
    return stats


# ---- reading the decisions back ----


def read_decisions(sqs, url, threads):
    seen = {}
    lock = threading.Lock()

    def drain():
        empties = 0
        while empties < 2:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not messages:
                empties += 1
                continue
            empties = 0
            with lock:
                for m in messages:
                    seen[m["MessageId"]] = json.loads(m["Body"])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(drain) for _ in range(threads)]:
            future.result()
    return list(seen.values())


def check_decisions(decisions, n):
    expected_rejects = sum(1 for i in range(n) if tampered(i))
    by_receipt = {}
    wrong = []
    outcomes = {}
    for d in decisions:
        rid = d.get("receipt_id")
        by_receipt[rid] = by_receipt.get(rid, 0) + 1
        key = f"{d.get('decision')}/{d.get('reason')}"
        outcomes[key] = outcomes.get(key, 0) + 1
    missing = [f"r-bench-{i:06d}" for i in range(n) if f"r-bench-{i:06d}" not in by_receipt]
    wrong.extend(f"{rid}: no decision" for rid in missing)
    for d in decisions:
        rid = d.get("receipt_id", "")
        try:
            i = int(rid.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            wrong.append(f"unexpected receipt {rid!r}")
            continue
        want = "reject/price_mismatch" if tampered(i) else "fulfill/verified"
        got = f"{d.get('decision')}/{d.get('reason')}"
        if got != want:
            wrong.append(f"{rid}: {got}, expected {want}")
    duplicates = sum(c - 1 for c in by_receipt.values() if c > 1)
    rejects = sum(1 for d in decisions if d.get("decision") == "reject")
    ok = (
        len(decisions) == n
        and not wrong
        and duplicates == 0
        and rejects == expected_rejects
        and len(by_receipt) == n
    )
    return {
        "ok": ok,
        "decisions": len(decisions),
        "rejects": rejects,
        "expected_rejects": expected_rejects,
        "duplicates": duplicates,
        "outcomes": outcomes,
        "wrong": wrong[:10],
        "wrong_count": len(wrong),
    }


# ---- one run ----


def worker_env(args, endpoint, api_url, purchases, results, concurrency, metrics_port):
    drop = ("AWS_", "BOOTPAY_", "WORKER_", "BATCH_", "RECEIVE_", "REQUEUE_", "SHUTDOWN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PURCHASE_QUEUE_URL=purchases,
        RESULT_QUEUE_URL=results,
        WORKER_CONCURRENCY=str(concurrency),
        METRICS_ADDR=f"127.0.0.1:{metrics_port}",
        RUST_LOG="warn",
        LOG_FORMAT="json",
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_EC2_METADATA_DISABLED="true",
        BOOTPAY_API_URL=api_url,
    )
    if getattr(args, "credentials", "token") == "keys":
        env.update(BOOTPAY_CLIENT_KEY=CLIENT_KEY, BOOTPAY_SECRET_KEY=SECRET_KEY)
    else:
        env.update(BOOTPAY_APPLICATION_ID=APPLICATION_ID, BOOTPAY_PRIVATE_KEY=PRIVATE_KEY)
    if args.linger_ms is not None:
        env["BATCH_LINGER_MS"] = str(args.linger_ms)
    if args.ledger:
        env["LEDGER_TABLE"] = LEDGER_TABLE
    return env


def create_ledger(args, endpoint, work):
    """Creates the ledger table on the emulator with the build's own `ledger init`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LEDGER_"))}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_REGION=REGION, AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
    with open(work / "ledger-init.log", "w") as out:
        status = subprocess.call(
            [str(args.bin_dir / "receipt-verifier"), "ledger", "init", "--table", LEDGER_TABLE],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    if status != 0:
        raise BenchError(f"ledger init failed (log: {work / 'ledger-init.log'})")


def reap(proc, timeout=30.0):
    """SIGTERM, then os.wait4 for the exit status and rusage (SIGKILL after `timeout`)."""
    proc.send_signal(signal.SIGTERM)
    killer = threading.Timer(timeout, lambda: proc.returncode is None and proc.kill())
    killer.start()
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, rusage


def run_one(args, concurrency, work):
    n, latency = args.purchases, args.latency_ms
    procs = Processes()
    try:
        load_before = loadavg()
        emulator, endpoint, version = start_emulator(args.sqs, procs, work)
        sqs = sqs_client(endpoint, pool=max(16, args.enqueue_threads))
        purchases, results, dlq = create_queues(sqs)
        if args.ledger:
            create_ledger(args, endpoint, work)
        fake, api_url = start_fake(args.bin_dir, procs, work, n, latency)

        log(f"C={concurrency}: enqueueing {n} purchases on {args.sqs} ({endpoint})")
        started = time.monotonic()
        enqueue(sqs, purchases, n, args.enqueue_threads)
        enqueue_secs = time.monotonic() - started
        visible, _, _ = queue_counts(sqs, purchases)
        if visible != n:
            raise BenchError(f"the purchase queue holds {visible} messages, expected {n}")
        log(f"C={concurrency}: {n} enqueued in {enqueue_secs:.1f}s; starting the worker")

        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = worker_env(args, endpoint, api_url, purchases, results, concurrency, metrics_port)
        spawned = time.monotonic()
        # BENCH_WORKER_WRAPPER runs the worker under a tool, e.g. "valgrind --tool=callgrind
        # --callgrind-out-file=/tmp/cg.out" to count its instructions (repeatable, unlike time).
        wrapper = os.environ.get("BENCH_WORKER_WRAPPER", "").split()
        worker = procs.adopt(
            "receipt-verifier",
            [*wrapper, str(args.bin_dir / "receipt-verifier"), "run"],
            env,
            work / "worker.log",
        )

        t_first = t_last = None
        cpu_first = cpu_last = {}
        pids = {"worker": worker.pid, "emulator": emulator.pid, "fake": fake.pid}
        progress_at, progress = time.monotonic(), -1.0
        text = ""
        next_poll = time.monotonic()
        scrapes = 0
        in_flight = []
        while True:
            if worker.poll() is not None:
                raise BenchError(
                    f"the worker exited with status {worker.returncode} "
                    f"(log: {work / 'worker.log'})"
                )
            try:
                text = scrape(metrics_url)
                scrapes += 1
            except (urllib.error.URLError, OSError):
                text = ""
            now = time.monotonic()
            decided = metric_sum(text, "receipt_verifier_decisions_total") if text else 0.0
            if decided > 0 and t_first is None:
                t_first = now
                cpu_first = {k: cpu_ticks(p) for k, p in pids.items()}
            if t_first is not None and decided < n:
                in_flight.append(metric_sum(text, "receipt_verifier_messages_in_flight"))
            if decided >= n:
                t_last = now
                cpu_last = {k: cpu_ticks(p) for k, p in pids.items()}
                break
            if decided != progress:
                progress, progress_at = decided, now
            elif now - progress_at > STALL_SECS:
                raise BenchError(
                    f"no progress for {STALL_SECS:.0f}s at {decided:.0f} of {n} decisions "
                    f"(log: {work / 'worker.log'})"
                )
            # Until the first decision, poll often: start-up is measured to a few ms.
            next_poll += POLL_SECS if t_first is not None else STARTUP_POLL_SECS
            time.sleep(max(0.0, next_poll - time.monotonic()))

        # Decisions are counted once published; wait for the deletes that follow them (the
        # purchase queue empty, in flight included), then read the final counts.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if queue_counts(sqs, purchases) == (0, 0, 0):
                break
            time.sleep(POLL_SECS)
        text = scrape(metrics_url)
        scrapes += 1
        sqs_requests = metric_sum(text, "receipt_verifier_sqs_requests_total")
        sqs_by_op = metric_by_label(text, "receipt_verifier_sqs_requests_total", "operation")
        sqs_errors = metric_by_label(text, "receipt_verifier_sqs_requests_total", "outcome").get(
            "error", 0.0
        )
        bootpay_requests = metric_sum(text, "receipt_verifier_bootpay_requests_total")
        ledger_requests = metric_sum(text, "receipt_verifier_ledger_requests_total")
        ledger_by_op = metric_by_label(text, "receipt_verifier_ledger_requests_total", "operation")
        bootpay_by_ep = metric_by_label(
            text, "receipt_verifier_bootpay_requests_total", "endpoint"
        )
        received = metric_sum(text, "receipt_verifier_messages_received_total")
        (work / "metrics.txt").write_text(text)
        counters = {
            label: metric_by_label(text, f"receipt_verifier_{name}", label)
            for name, label in (
                ("visibility_changes_total", "kind"),
                ("token_refreshes_total", "trigger"),
                ("requeues_total", "why"),
                ("sqs_batch_entry_failures_total", "operation"),
                ("bootpay_retries_total", "endpoint"),
            )
        }

        def mean_secs(histogram):
            count = metric_sum(text, histogram + "_count")
            return metric_sum(text, histogram + "_sum") / count if count else None

        processing = mean_secs("receipt_verifier_processing_duration_seconds")
        bootpay_latency = mean_secs("receipt_verifier_bootpay_request_duration_seconds")
        fake_counts = fake_stats(api_url)

        # What one /metrics scrape costs the worker, so the scrapes this script made can be
        # told apart from the work; the calibration scrapes are taken off its CPU time.
        before = cpu_ticks(worker.pid)
        for _ in range(CALIBRATION_SCRAPES):
            scrape(metrics_url)
        calibration_secs = (cpu_ticks(worker.pid) - before) / CLK_TCK
        scrape_ms = 1000.0 * calibration_secs / CALIBRATION_SCRAPES

        hwm_kib = peak_rss_kib(worker.pid)
        breakdown = rss_breakdown_kib(worker.pid)
        status, rusage = reap(worker)
        cpu_secs = max(0.0, rusage.ru_utime + rusage.ru_stime - calibration_secs)

        log(f"C={concurrency}: reading the decisions back from the result queue")
        decisions = read_decisions(sqs, results, args.enqueue_threads)
        check = check_decisions(decisions, n)
        purchase_left = queue_counts(sqs, purchases)
        dlq_left = queue_counts(sqs, dlq)
        check["purchase_queue_left"] = sum(purchase_left)
        check["dlq"] = sum(dlq_left)
        check["ok"] = check["ok"] and check["purchase_queue_left"] == 0 and check["dlq"] == 0

        warnings = 0
        for line in (work / "worker.log").read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level", "")
            except json.JSONDecodeError:
                level = "?"
            if level in ("WARN", "ERROR", "?"):
                warnings += 1

        drain = t_last - t_first

        def busy(name):
            a, b = cpu_first.get(name), cpu_last.get(name)
            if a is None or b is None or drain <= 0:
                return None
            return 100.0 * (b - a) / CLK_TCK / drain

        fake_total = sum(
            fake_counts.get(k, 0) for k in ("token_requests", "receipt_requests", "confirm_requests")
        )
        return {
            "concurrency": concurrency,
            "sqs_version": version,
            "purchases": n,
            "latency_ms": latency,
            "credentials": args.credentials,
            "ceiling_per_sec": concurrency / (latency / 1000.0) if latency else None,
            "decisions_per_sec": n / drain if drain > 0 else None,
            "drain_secs": drain,
            "first_decision_secs": t_first - spawned,
            "enqueue_secs": enqueue_secs,
            "worker_cpu_secs": cpu_secs,
            "worker_user_secs": rusage.ru_utime,
            "worker_sys_secs": rusage.ru_stime,
            "mean_in_flight": sum(in_flight) / len(in_flight) if in_flight else None,
            "mean_processing_ms": None if processing is None else 1000.0 * processing,
            "mean_bootpay_request_ms": (
                None if bootpay_latency is None else 1000.0 * bootpay_latency
            ),
            "worker_cpu_ms_per_decision": 1000.0 * cpu_secs / n,
            "worker_cpu_ms_per_decision_in_drain": (
                None
                if busy("worker") is None
                else 1000.0 * (cpu_last["worker"] - cpu_first["worker"]) / CLK_TCK / n
            ),
            "worker_cpu_secs_to_first_decision": (
                None if cpu_first.get("worker") is None else cpu_first["worker"] / CLK_TCK
            ),
            "metrics_scrapes": scrapes,
            "metrics_scrape_cpu_ms": scrape_ms,
            "worker_peak_rss_mib": rusage.ru_maxrss / 1024.0,
            "worker_vm_hwm_mib": None if hwm_kib is None else hwm_kib / 1024.0,
            "worker_rss_anon_mib": breakdown.get("RssAnon", 0) / 1024.0 or None,
            "worker_rss_file_mib": breakdown.get("RssFile", 0) / 1024.0 or None,
            "worker_exit_status": status,
            "worker_log_warnings": warnings,
            "sqs_requests": sqs_requests,
            "sqs_requests_per_decision": sqs_requests / n,
            "sqs_requests_by_operation": sqs_by_op,
            "sqs_request_errors": sqs_errors,
            "messages_received": received,
            "bootpay_requests": bootpay_requests,
            "bootpay_requests_per_decision": bootpay_requests / n,
            "bootpay_requests_by_endpoint": bootpay_by_ep,
            "ledger": args.ledger,
            "ledger_requests": ledger_requests,
            "ledger_requests_per_decision": ledger_requests / n,
            "ledger_requests_by_operation": ledger_by_op,
            "fake_stats": fake_counts,
            "visibility_changes_by_kind": counters["kind"],
            "token_refreshes_by_trigger": counters["trigger"],
            "requeues_by_why": counters["why"],
            "sqs_batch_entry_failures": counters["operation"],
            "bootpay_retries": counters["endpoint"],
            "fake_requests": fake_total,
            "cpu_busy_percent_during_drain": {
                "worker": busy("worker"),
                "emulator": busy("emulator"),
                "bootpay_fake": busy("fake"),
            },
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "check": check,
        }
    finally:
        procs.close()


# ---- output ----


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_run(r, out):
    c = r["check"]
    busy = r["cpu_busy_percent_during_drain"]
    print(f"concurrency {r['concurrency']}:", file=out)
    rows = [
        ("decisions/s", f"{fmt(r['decisions_per_sec'], '.0f')}  "
         f"({r['purchases']} decisions in {r['drain_secs']:.2f}s, first to last)"),
        ("ceiling", f"{fmt(r['ceiling_per_sec'], '.0f')}/s  (concurrency / latency)"),
        ("first decision", f"{r['first_decision_secs']:.3f}s after the worker started"),
        ("worker CPU", f"{r['worker_cpu_ms_per_decision']:.3f} ms/decision  "
         f"({r['worker_cpu_secs']:.2f}s user+sys over its life: "
         f"{fmt(r['worker_cpu_secs_to_first_decision'], '.2f')}s to the first decision, "
         f"{fmt(r['worker_cpu_ms_per_decision_in_drain'], '.3f')} ms/decision from first to last; "
         "about "
         f"{r['metrics_scrapes'] * r['metrics_scrape_cpu_ms'] / 1000:.2f}s answering "
         f"{r['metrics_scrapes']} /metrics scrapes at {r['metrics_scrape_cpu_ms']:.2f} ms each)"),
        ("peak RSS", f"{r['worker_peak_rss_mib']:.1f} MiB  (ru_maxrss; VmHWM before SIGTERM "
         f"{fmt(r['worker_vm_hwm_mib'], '.1f')} MiB; resident then: "
         f"{fmt(r.get('worker_rss_anon_mib'), '.1f')} MiB anonymous, "
         f"{fmt(r.get('worker_rss_file_mib'), '.1f')} MiB of mapped files)"),
        ("SQS requests", f"{r['sqs_requests_per_decision']:.3f}/decision  ({r['sqs_requests']:.0f}: "
         + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["sqs_requests_by_operation"].items()))
         + (f"; {r['sqs_request_errors']:.0f} failed" if r["sqs_request_errors"] else "")
         + ")"),
        ("ledger requests", (f"{r['ledger_requests_per_decision']:.3f}/decision  ("
         + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["ledger_requests_by_operation"].items()))
         + ")") if r["ledger"] else "no ledger"),
        ("Bootpay requests", f"{r['bootpay_requests_per_decision']:.4f}/decision  "
         f"({r['bootpay_requests']:.0f}: "
         + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["bootpay_requests_by_endpoint"].items()))
         + f"; bootpay-fake counted {r['fake_requests']})"),
        ("time per purchase", f"{fmt(r['mean_processing_ms'], '.1f')} ms from receive to decision "
         f"published (Bootpay requests {fmt(r['mean_bootpay_request_ms'], '.1f')} ms); "
         f"{fmt(r['mean_in_flight'], '.1f')} of {r['concurrency']} slots busy on average"),
        ("CPU busy in drain", f"worker {fmt(busy['worker'], '.0f')}%, "
         f"emulator {fmt(busy['emulator'], '.0f')}%, bootpay-fake {fmt(busy['bootpay_fake'], '.0f')}%"
         " (100% = one core)"),
        ("worker log", f"{r['worker_log_warnings']} warnings/errors, exit status {r['worker_exit_status']}"),
        ("load average", f"{' '.join(map(str, r['loadavg_before'] or []))} before, "
         f"{' '.join(map(str, r['loadavg_after'] or []))} after"),
    ]
    for label, value in rows:
        print(f"  {label:18} {value}", file=out)
    outcome = ", ".join(f"{v} {k}" for k, v in sorted(c["outcomes"].items()))
    verdict = "OK" if c["ok"] else "WRONG"
    print(
        f"  {'check':18} {verdict}: {c['decisions']} decisions on the result queue for "
        f"{r['purchases']} purchases ({outcome}); {c['rejects']} rejects for "
        f"{c['expected_rejects']} tampered receipts; {c['duplicates']} duplicates; "
        f"{c['purchase_queue_left']} purchases left; {c['dlq']} dead letters",
        file=out,
    )
    for line in c["wrong"]:
        print(f"    {line}", file=out)
    extra = {
        "visibility changes": r["visibility_changes_by_kind"],
        "token fetches": r["token_refreshes_by_trigger"],
        "requeues": r["requeues_by_why"],
        "failed batch entries": r["sqs_batch_entry_failures"],
        "Bootpay retries": r["bootpay_retries"],
    }
    extra = {k: v for k, v in extra.items() if v and not (k == "token fetches" and sum(v.values()) <= 1)}
    if extra:
        print(f"  {'also':18} " + "; ".join(
            f"{k}: " + ", ".join(f"{label} {value:.0f}" for label, value in sorted(v.items()))
            for k, v in extra.items()), file=out)
    if r.get("files"):
        print(f"  {'files kept':18} {r['files']} (worker log, metrics, emulator log)", file=out)
    print(file=out)


def print_table(runs, out):
    best = max((r["decisions_per_sec"] or 0) for r in runs) or 1
    header = (
        f"{'conc':>5} {'ceiling/s':>9} {'decisions/s':>11} {'first s':>7} {'CPU ms/dec':>10} "
        f"{'RSS MiB':>7} {'SQS/dec':>7} {'Bootpay/dec':>11} {'check':>5}  "
    )
    print(header, file=out)
    for r in runs:
        bar = "#" * round(30 * (r["decisions_per_sec"] or 0) / best)
        print(
            f"{r['concurrency']:>5} {fmt(r['ceiling_per_sec'], '.0f'):>9} "
            f"{fmt(r['decisions_per_sec'], '.0f'):>11} {r['first_decision_secs']:>7.2f} "
            f"{r['worker_cpu_ms_per_decision']:>10.3f} {r['worker_peak_rss_mib']:>7.1f} "
            f"{r['sqs_requests_per_decision']:>7.3f} {r['bootpay_requests_per_decision']:>11.4f} "
            f"{'ok' if r['check']['ok'] else 'WRONG':>5}  {bar}",
            file=out,
        )
    print(file=out)


MEDIAN_FIGURES = [
    ("decisions/s", "decisions_per_sec", ".0f"),
    ("CPU ms/decision", "worker_cpu_ms_per_decision", ".3f"),
    ("peak RSS MiB", "worker_peak_rss_mib", ".1f"),
    ("SQS req/decision", "sqs_requests_per_decision", ".3f"),
    ("Bootpay req/decision", "bootpay_requests_per_decision", ".4f"),
    ("ledger req/decision", "ledger_requests_per_decision", ".3f"),
]


def print_medians(runs, out):
    """Median and range per concurrency: one run's CPU figure moves with the machine.
    Runs whose decisions were wrong are left out: their figures measure something else."""
    for concurrency in dict.fromkeys(r["concurrency"] for r in runs):
        every = [r for r in runs if r["concurrency"] == concurrency]
        group = [r for r in every if r["check"]["ok"]]
        print(f"concurrency {concurrency}, median (min-max) of the {len(group)} runs of "
              f"{len(every)} whose check was OK:", file=out)
        for label, key, spec in MEDIAN_FIGURES:
            values = sorted(r[key] for r in group if r[key] is not None)
            if values:
                print(f"  {label:20} {format(statistics.median(values), spec):>8}  "
                      f"({format(values[0], spec)}-{format(values[-1], spec)})", file=out)
        print(file=out)


def conditions(args, info, version):
    linger = "worker default" if args.linger_ms is None else f"{args.linger_ms} ms"
    build = f"receipt-verifier {info['revision'] or '(no git revision)'}, release profile"
    if args.bin_dir.resolve() != (ROOT / "target" / "release").resolve():
        build = f"binaries from {args.bin_dir} (the checkout is at {info['revision']})"
    tampered_count = sum(1 for i in range(args.purchases) if tampered(i))
    return (
        f"machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}\n"
        f"build:   {build}\n"
        f"stand:   {version} for SQS; bootpay-fake --latency-ms {args.latency_ms}; "
        f"{args.purchases} purchases enqueued before the worker starts "
        f"({tampered_count} with a tampered price); BATCH_LINGER_MS {linger}; "
        f"RUST_LOG=warn LOG_FORMAT=json"
    )


# ---- main ----


def parse_concurrency(raw):
    try:
        values = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {raw!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrency values must be integers >= 1")
    return values


def parse_args(argv):
    default_sqs = os.environ.get("BENCH_SQS") or ("awsim" if find_awsim() else "moto")
    p = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description="Runs the release worker against a local SQS emulator and bootpay-fake "
        "on a backlog of purchases and prints throughput and cost per decision.",
    )
    p.add_argument("--purchases", type=int, default=5000, metavar="N",
                   help="purchase events to decide (default 5000)")
    p.add_argument("--latency-ms", type=int, default=50, metavar="L",
                   help="latency bootpay-fake adds to every request (default 50)")
    p.add_argument("--concurrency", type=parse_concurrency, default=[64], metavar="C[,C...]",
                   help="WORKER_CONCURRENCY; a list runs each value on a fresh stand (default 64)")
    p.add_argument("--sqs", choices=["moto", "awsim"], default=default_sqs,
                   help="SQS emulator (default: awsim when installed, else moto; env BENCH_SQS)")
    p.add_argument("--linger-ms", type=int, default=None, metavar="MS",
                   help="BATCH_LINGER_MS for the worker (default: the worker's default)")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="runs of each concurrency, each on a fresh stand; with R > 1 the "
                   "median and range of each figure are printed too (default 1)")
    p.add_argument("--ledger", action="store_true",
                   help="run the worker with the decision ledger (LEDGER_TABLE) on the "
                   "emulator's DynamoDB, created with `ledger init`")
    p.add_argument("--credentials", choices=["token", "keys"], default="token",
                   help="the worker's Bootpay credentials: an application id and private key, "
                   "which need a token (default), or client and secret keys (HTTP Basic)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--enqueue-threads", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release", metavar="DIR",
                   help="where receipt-verifier and bootpay-fake are (default target/release); "
                   "to compare two builds")
    args = p.parse_args(argv)
    if args.purchases < 1:
        p.error("--purchases must be at least 1")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.latency_ms < 0:
        p.error("--latency-ms must not be negative")
    if args.sqs not in ("moto", "awsim"):
        p.error(f"BENCH_SQS={args.sqs!r}: use moto or awsim")
    if args.sqs == "awsim" and not find_awsim():
        p.error("--sqs awsim: no awsim on PATH or in ~/.cargo/bin (cargo install awsim)")
    for name in ("receipt-verifier", "bootpay-fake"):
        if not (args.bin_dir / name).is_file():
            p.error(f"{args.bin_dir / name} is missing: run cargo build --release --bins")
    return args


def main(argv):
    args = parse_args(argv)

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    become_subreaper()
    info = machine()
    runs = []
    failed = None
    # Rounds over the list rather than runs back to back, so a drift in the machine's load
    # spreads over every concurrency.
    for concurrency in (c for _ in range(args.repeat) for c in args.concurrency):
        work = Path(tempfile.mkdtemp(prefix=f"bench-c{concurrency}-"))
        try:
            run = run_one(args, concurrency, work)
            runs.append(run)
            if run["check"]["ok"]:
                shutil.rmtree(work, ignore_errors=True)
            else:
                run["files"] = str(work)
        except BenchError as e:
            failed = f"concurrency {concurrency}: {e} (files kept in {work})"
            break
        except KeyboardInterrupt:
            shutil.rmtree(work, ignore_errors=True)
            print("interrupted; every process stopped", file=sys.stderr)
            return 130
        except BaseException:
            print(f"files kept in {work}", file=sys.stderr)
            raise

    version = runs[0]["sqs_version"] if runs else args.sqs
    if args.json:
        json.dump(
            {
                "machine": info,
                "sqs": args.sqs,
                "sqs_version": version,
                "purchases": args.purchases,
                "latency_ms": args.latency_ms,
                "batch_linger_ms": args.linger_ms,
                "repeat": args.repeat,
                "runs": runs,
                "error": failed,
            },
            sys.stdout,
            indent=2,
        )
        print()
    elif runs:
        out = sys.stdout
        print(file=out)
        print(conditions(args, info, version), file=out)
        print(file=out)
        for r in runs:
            print_run(r, out)
        if len(runs) > 1:
            print_table(runs, out)
        if args.repeat > 1:
            print_medians(runs, out)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0 if all(r["check"]["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
