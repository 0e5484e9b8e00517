#!/usr/bin/env python3
"""What eager secondary certificates cost a proxy that clients connect to
often: HTTP/2 connection setups per second (full TLS 1.3 handshake,
SETTINGS both ways, every SERVER_CERTIFICATE the proxy sends) with 10
origins advertised eagerly, as a ratio to the same proxy with none.

    python3 tests/benches/handshakes.py LOAD_BIN BAUTA_BIN [ROUNDS] [SECONDS]

Variants, measured interleaved in each round (a fresh proxy per run, one
worker thread, 8 connections at once):

* `0 origins`: the baseline;
* `10 origins`: ten origins, a P-256 certificate each: ten signatures per
  connection;
* `10 origins, ed25519`: the same with Ed25519 keys;
* `10 origins, one cert`: one certificate naming all ten: one signature;
* `10 origins, no setting`: the client does not send the setting (as every
  client but Bauta's does today): nothing is signed.

Prints setups/s and the proxy's CPU µs per setup for each run, then per
variant the median of the per-round ratios to the baseline, with min–max.
"""
import json
import os
import statistics
import subprocess
import sys

VARIANTS = [
    ("0 origins", ["--origins", "0"]),
    ("10 origins", ["--origins", "10"]),
    ("10 origins, ed25519", ["--origins", "10", "--origin-key", "ed25519"]),
    ("10 origins, one cert", ["--origins", "10", "--shared-cert"]),
    ("10 origins, no setting", ["--origins", "10", "--no-setting"]),
]


def run(load, bauta, extra, seconds):
    argv = [load, "handshakes", "--spawn", "--worker-threads", "1", "--concurrency", "8",
            "--duration", str(seconds), "--json"] + extra
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                       env=dict(os.environ, BAUTA_BIN=bauta))
    data = json.loads(r.stdout)
    if data["failures"]:
        raise SystemExit(f"{' '.join(argv)}: {data['failure_lines']}")
    h = data["handshakes"]
    cpu = data["proxy_cpu_s"]["handshakes"] * 1e6 / max(h["setups"], 1)
    return h["setups_per_s"], cpu


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        return 2
    load, bauta = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 3
    seconds = float(args[3]) if len(args) > 3 else 3.0
    rates = {name: [] for name, _ in VARIANTS}
    cpus = {name: [] for name, _ in VARIANTS}
    for r in range(rounds):
        for name, extra in VARIANTS:
            rate, cpu = run(load, bauta, extra, seconds)
            rates[name].append(rate)
            cpus[name].append(cpu)
            print(f"round {r + 1}: {name}: {rate:.0f} setups/s, proxy {cpu:.0f} µs CPU per setup",
                  flush=True)
    base = rates[VARIANTS[0][0]]
    print()
    print("| variant | setups/s (median) | proxy CPU µs/setup | × 0 origins (per-round ratio: median, min–max) |")
    print("|---|---|---|---|")
    for name, _ in VARIANTS:
        ratios = [a / b for a, b in zip(rates[name], base)]
        print(f"| {name} | {statistics.median(rates[name]):.0f} | {statistics.median(cpus[name]):.0f} "
              f"| ×{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
