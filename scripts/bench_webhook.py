"""Benchmark of the webhook ingress: the release `receipt-verifier webhook` taking v2
webhooks from C concurrent senders (the release `webhook_load` example, keep-alive
connections, each webhook about its own receipt so none is answered as a repeat) and
queueing a notification for each on an SQS emulator's purchase queue.

Prints webhooks accepted per second, the answer time's percentiles as the senders saw
them, the ingress's CPU per webhook and peak RSS, and checks that the purchase queue holds
one notification per webhook. Run it through `scripts/bench.sh --webhook`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared stand: emulators, processes, rusage)
from bench import BenchError, log  # noqa: E402


def run_one(args, work):
    procs = bench.Processes()
    try:
        emulator, endpoint, version = bench.start_emulator(args.sqs, procs, work)
        sqs = bench.sqs_client(endpoint)
        purchases, _, _ = bench.create_queues(sqs)
        port = bench.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEBHOOK_"))}
        env.update(
            PURCHASE_QUEUE_URL=purchases,
            WEBHOOK_ADDR=f"127.0.0.1:{port}",
            WEBHOOK_ALLOWED_SOURCES="127.0.0.1/32",
            WEBHOOK_MAX_CONCURRENCY=str(max(256, args.concurrency)),
            RUST_LOG="warn",
            LOG_FORMAT="json",
            AWS_ENDPOINT_URL=endpoint,
            AWS_REGION=bench.REGION,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_EC2_METADATA_DISABLED="true",
        )
        ingress = procs.adopt(
            "receipt-verifier webhook",
            [str(args.bin_dir / "receipt-verifier"), "webhook"],
            env,
            work / "webhook.log",
        )
        bench.wait_for_port(port, ingress, "the webhook ingress")
        url = f"http://127.0.0.1:{port}/webhooks/bootpay"
        log(f"sending {args.webhooks} webhooks from {args.concurrency} senders")
        cpu_before = bench.cpu_ticks(ingress.pid)
        load = subprocess.run(
            [str(args.load), url, str(args.webhooks), str(args.concurrency)],
            check=True, capture_output=True, text=True,
        )
        cpu_after = bench.cpu_ticks(ingress.pid)
        result = json.loads(load.stdout)
        status, rusage = bench.reap(ingress)
        visible, in_flight, delayed = bench.queue_counts(sqs, purchases)
        queued = visible + in_flight + delayed
        result.update(
            sqs_version=version,
            concurrency=args.concurrency,
            ingress_cpu_ms_per_webhook=1000.0 * (cpu_after - cpu_before) / bench.CLK_TCK
            / args.webhooks,
            ingress_peak_rss_mib=rusage.ru_maxrss / 1024.0,
            ingress_exit_status=status,
            queued=queued,
            ok=result["accepted"] == args.webhooks and queued == args.webhooks,
        )
        return result
    finally:
        procs.close()


FIGURES = [
    ("webhooks/s", "per_sec", ".0f"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"),
    ("max ms", "max_ms", ".2f"),
    ("ingress CPU ms/webhook", "ingress_cpu_ms_per_webhook", ".3f"),
    ("ingress peak RSS MiB", "ingress_peak_rss_mib", ".1f"),
]


def main(argv):
    default_sqs = os.environ.get("BENCH_SQS") or ("awsim" if bench.find_awsim() else "moto")
    p = argparse.ArgumentParser(prog="scripts/bench.sh --webhook", description=__doc__)
    p.add_argument("--webhooks", type=int, default=20000, metavar="N")
    p.add_argument("--concurrency", type=int, default=64, metavar="C")
    p.add_argument("--repeat", type=int, default=3, metavar="R")
    p.add_argument("--sqs", choices=["moto", "awsim"], default=default_sqs)
    p.add_argument("--json", action="store_true")
    p.add_argument("--bin-dir", type=Path, default=bench.ROOT / "target" / "release")
    p.add_argument("--load", type=Path,
                   default=bench.ROOT / "target" / "release" / "examples" / "webhook_load")
    args = p.parse_args(argv)
    bench.become_subreaper()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-webhook-") as work:
            r = run_one(args, Path(work))
            runs.append(r)
            log(f"run {i + 1}: {r['per_sec']:.0f} webhooks/s, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, {r['ingress_cpu_ms_per_webhook']:.3f} CPU ms/webhook, "
                f"{'ok' if r['ok'] else 'WRONG'}")
    if args.json:
        print(json.dumps({"machine": bench.machine(), "runs": runs}, indent=2))
    else:
        print(f"{args.webhooks} webhooks, {args.concurrency} senders, {runs[0]['sqs_version']}, "
              f"{args.repeat} runs (median, range):")
        for label, key, spec in FIGURES:
            values = [r[key] for r in runs]
            print(f"  {label:24} {format(statistics.median(values), spec):>9}  "
                  f"({format(min(values), spec)}–{format(max(values), spec)})")
        print(f"  {'checks':24} {'ok' if all(r['ok'] for r in runs) else 'WRONG':>9}  "
              "(every webhook answered 200 {\"success\":true} and queued once)")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
