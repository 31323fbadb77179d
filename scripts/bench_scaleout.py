"""Scale-out benchmark: W release workers sharing one purchase queue.

For each worker count it starts a fresh stand (an SQS emulator and bootpay-fake with a
fixed latency, as scripts/bench.py does), enqueues N purchase events, starts W
`receipt-verifier run` processes at the same WORKER_CONCURRENCY, and measures decisions/s
from the first decision to the Nth (the sum of the workers' /metrics). Every decision is
read back from the result queue and checked as bench.py checks them: exactly N, one per
receipt (no duplicates across workers), each the right one, queues empty. Run it through
`scripts/bench.sh --scale-out`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

import bench
from bench import BenchError


def run_one(args, workers, work):
    n = args.purchases
    procs = bench.Processes()
    try:
        emulator, endpoint, version = bench.start_emulator(args.sqs, procs, work)
        sqs = bench.sqs_client(endpoint, pool=16)
        purchases, results, dlq = bench.create_queues(sqs)
        fake, api_url = bench.start_fake(args.bin_dir, procs, work, n, args.latency_ms)
        bench.enqueue(sqs, purchases, n, 8)
        ports = [bench.free_port() for _ in range(workers)]
        settings = argparse.Namespace(linger_ms=None, ledger=False)
        running = [
            procs.adopt(
                f"receipt-verifier-{w}",
                [str(args.bin_dir / "receipt-verifier"), "run"],
                bench.worker_env(
                    settings, endpoint, api_url, purchases, results, args.concurrency, port
                ),
                work / f"worker-{w}.log",
            )
            for w, port in enumerate(ports)
        ]

        def decided():
            total = 0.0
            for port in ports:
                try:
                    text = bench.scrape(f"http://127.0.0.1:{port}/metrics")
                except (urllib.error.URLError, OSError):
                    continue
                total += bench.metric_sum(text, "receipt_verifier_decisions_total")
            return total

        t_first = None
        progress, progress_at = -1.0, time.monotonic()
        while True:
            for worker in running:
                if worker.poll() is not None:
                    raise BenchError(f"a worker exited with status {worker.returncode} (logs: {work})")
            count, now = decided(), time.monotonic()
            if count > 0 and t_first is None:
                t_first = now
            if count >= n:
                t_last = now
                break
            if count != progress:
                progress, progress_at = count, now
            elif now - progress_at > bench.STALL_SECS:
                raise BenchError(f"no progress at {count:.0f} of {n} decisions (logs: {work})")
            time.sleep(bench.POLL_SECS)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and bench.queue_counts(sqs, purchases) != (0, 0, 0):
            time.sleep(bench.POLL_SECS)
        statuses = [bench.reap(worker)[0] for worker in running]
        check = bench.check_decisions(bench.read_decisions(sqs, results, 8), n)
        left = sum(bench.queue_counts(sqs, purchases))
        dead = sum(bench.queue_counts(sqs, dlq))
        check["ok"] = check["ok"] and left == 0 and dead == 0 and statuses == [0] * workers
        return {
            "workers": workers,
            "decisions_per_sec": n / (t_last - t_first) if t_last > t_first else None,
            "check": check,
            "left": left,
            "dead": dead,
            "sqs_version": version,
        }
    finally:
        procs.close()


def main(argv):
    p = argparse.ArgumentParser(
        prog="scripts/bench.sh --scale-out",
        description="W workers on one purchase queue against one: decisions/s and duplicates.",
    )
    p.add_argument("--purchases", type=int, default=10000)
    p.add_argument("--latency-ms", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=64, help="WORKER_CONCURRENCY of each worker")
    p.add_argument("--workers", type=int, default=2, help="compared with one worker")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, alternating")
    default_sqs = os.environ.get("BENCH_SQS") or ("awsim" if bench.find_awsim() else "moto")
    p.add_argument("--sqs", choices=["moto", "awsim"], default=default_sqs)
    p.add_argument("--bin-dir", type=Path, default=bench.ROOT / "target" / "release")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    bench.become_subreaper()
    runs = []
    for r in range(args.repeat):
        for workers in (1, args.workers):
            with tempfile.TemporaryDirectory(prefix="rv-scaleout-") as tmp:
                run = run_one(args, workers, Path(tmp))
            bench.log(
                f"run {r + 1}: {workers} worker(s): {run['decisions_per_sec']:.0f} decisions/s, "
                f"{run['check']['duplicates']} duplicates, {'ok' if run['check']['ok'] else 'FAILED'}"
            )
            runs.append(run)
    one = statistics.median(r["decisions_per_sec"] for r in runs if r["workers"] == 1)
    many = statistics.median(r["decisions_per_sec"] for r in runs if r["workers"] == args.workers)
    ok = all(r["check"]["ok"] for r in runs)
    summary = {
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "purchases": args.purchases,
        "one_worker": one,
        "workers": args.workers,
        "many_workers": many,
        "speedup": many / one,
        "ok": ok,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.purchases} purchases, concurrency {args.concurrency} per worker, "
            f"{args.latency_ms} ms, {runs[0]['sqs_version']}, medians of {args.repeat}:\n"
            f"  1 worker   {one:8.0f} decisions/s\n"
            f"  {args.workers} workers  {many:8.0f} decisions/s  ({many / one:.2f}x)\n"
            f"  checks     {'ok (exactly N decisions, no duplicates, queues empty)' if ok else 'FAILED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
